package main

// In-process benchmarks of the server's hot paths, for CPU profiles (a
// running server's come from atr serve --debug-listen). They build the same
// stack atr serve does — a real
// SoftHSM2 CA, the registry over SQLite or PostgreSQL, and for verify the api
// handler — without TLS or the network:
//
//	go test ./cmd/atr-bench -run '^$' -bench Profile -benchtime 400x -cpuprofile /tmp/cpu.out
//	go tool pprof -top -nodecount 30 /tmp/cpu.out
//
// ATR_BENCH_CPUPROFILE=/tmp/cpu.out instead profiles only the timed part of
// the issuance benchmarks, without their setup.
//
// The issuance benchmarks run 2 goroutines per GOMAXPROCS;
// ATR_BENCH_PARALLELISM=8 runs 8 (16 on 2 cores, the peer bench's c=16).
// Besides the process's CPU per operation they report the group commit's
// writer time per operation, its mean batch and the bytes written per
// operation. ATR_BENCH_AGENTS=N has BenchmarkProfileRotate register N agents
// (default 64) and rotate them in turn.
//
// ATR_BENCH_DB=postgres uses a fresh PostgreSQL database (registrytest).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// profileTimed writes a CPU profile of the timed part alone to the file
// ATR_BENCH_CPUPROFILE names, if set: go test's -cpuprofile also covers the
// setup (BenchmarkProfileRotate's registrations, each with a VRF signature,
// are most of its samples). Each run of the benchmark function overwrites
// the file, so it ends with the last (the -benchtime) run's profile.
func profileTimed(b *testing.B) (stop func()) {
	path := os.Getenv("ATR_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("ATR_BENCH_CPUPROFILE: %v (not with go test's -cpuprofile)", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// reportCPU starts counting the process's CPU time (user + system, all
// threads, SoftHSM2's and SQLite's C code included); the function it returns
// reports it per operation as "cpu-ms/op" — what the throughput target is
// made of on a machine with few cores.
func reportCPU(b *testing.B) (stop func()) {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	}
}

// profileParallelism is the goroutines per GOMAXPROCS of the issuance
// benchmarks: 2 (4 goroutines on 2 cores), or ATR_BENCH_PARALLELISM (8 on 2
// cores is the peer bench's c=16).
func profileParallelism(b *testing.B) int { return envInt(b, "ATR_BENCH_PARALLELISM", 2, 1) }

// envInt reads the integer environment variable name: def when it is unset,
// at least least when it is set.
func envInt(b *testing.B, name string, def, least int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want an integer of at least %d", name, v, least)
	}
	return n
}

// reportGroupCommit reports what the group commit's writer did per
// operation: its busy time ("writer-ms/op"; near the benchmark's ns/op, the
// one writer is saturated) and the mean batch ("items/batch").
func reportGroupCommit(b *testing.B, st *registry.Store) (stop func()) {
	start := st.GroupCommitStats()
	return func() {
		end := st.GroupCommitStats()
		b.ReportMetric(float64(end.Busy-start.Busy)/float64(time.Millisecond)/float64(b.N), "writer-ms/op")
		if n := end.Batches - start.Batches; n > 0 {
			b.ReportMetric(float64(end.Items-start.Items)/float64(n), "items/batch")
		}
	}
}

// reportWritten reports the bytes the process handed to write system calls
// per operation ("written-kB/op", /proc/self/io's wchar): on SQLite the WAL's
// frames and the checkpoints that copy them into the database, so it moves
// with the pages an issuance writes.
func reportWritten(b *testing.B) (stop func()) {
	start := writtenBytes(b)
	return func() {
		b.ReportMetric(float64(writtenBytes(b)-start)/1024/float64(b.N), "written-kB/op")
	}
}

func writtenBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("/proc/self/io has no wchar line")
	return 0
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchAgents is how many agents BenchmarkProfileRotate registers and then
// rotates in turn: 64, or ATR_BENCH_AGENTS (more agents make tables and
// indexes larger than the writer's page cache, as in the peer bench).
func benchAgents(b *testing.B) int { return envInt(b, "ATR_BENCH_AGENTS", 64, 16) }

func profileDB() string {
	if db := os.Getenv("ATR_BENCH_DB"); db != "" {
		return db
	}
	return "sqlite"
}

// BenchmarkProfileRegister is Registry.Register (CSR policy, TBS, lint,
// record-before-sign, token signature, store + log append) from 4 goroutines.
func BenchmarkProfileRegister(b *testing.B) {
	f := registrytest.NewFixture(b, registrytest.WithDatabase(profileDB()))
	owner := f.Owner("bench", "bench")
	runIssuances(b, f, func(i int64, csr []byte) error {
		_, err := f.Registry.Register(context.Background(), owner, registry.RegisterRequest{
			Name: fmt.Sprintf("p%06d.bench", i), CSR: csr})
		return err
	})
}

// runIssuances pre-generates b.N CSRs, then runs issue(i, csr) for each
// from 2 × GOMAXPROCS goroutines, timed, with the CPU per operation.
func runIssuances(b *testing.B, f *registrytest.Fixture, issue func(i int64, csr []byte) error) {
	csrs := make([][]byte, b.N)
	for i := range csrs {
		csrs[i], _ = f.NewCSR()
	}
	var next atomic.Int64
	b.SetParallelism(profileParallelism(b))
	b.ResetTimer()
	defer profileTimed(b)()
	defer reportCPU(b)()
	defer reportWritten(b)()
	defer reportGroupCommit(b, f.Store)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			// The registry's clock moves on as a server's does (about one
			// issuance per millisecond): serials and grace ends then follow
			// each other, as they do in atr serve, instead of sharing one
			// instant.
			f.Clock.Advance(time.Millisecond)
			if err := issue(i, csrs[i]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkProfileVerifyAPI is POST /v1/verify through the api handler
// (middleware, JSON, rate limiter) and Registry.Verify (parse, chain, status).
// Each request comes from its own client address so that the (raised, never
// disabled) per-IP limit does not refuse it.
func BenchmarkProfileVerifyAPI(b *testing.B) {
	f := registrytest.NewFixture(b, registrytest.WithDatabase(profileDB()))
	csr, _ := f.NewCSR()
	iss, err := f.Registry.Register(context.Background(), f.Owner("bench", "bench"), registry.RegisterRequest{Name: "v.bench", CSR: csr})
	if err != nil {
		b.Fatal(err)
	}
	// As in atr serve: the change notifier runs, so status, chain and
	// receipt come from memory while nothing changes.
	if err := f.Registry.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Registry.Close() })
	limits := api.DefaultRateLimits()
	limits.Public = ratelimit.Limit{Rate: 100 * 1200, Period: time.Minute, Burst: 100 * 200}
	srv, err := api.New(api.Config{TrustDomain: registrytest.TrustDomain, RateLimits: limits},
		api.Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Now: f.Clock.Now}, f.Log)
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	body, _ := json.Marshal(map[string]string{"certificate": iss.CertificatePEM, "chain": iss.ChainPEM})
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			r := httptest.NewRequest(http.MethodPost, "/v1/verify", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:4242", byte(i>>16), byte(i>>8), byte(i))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"verified":true`)) {
				b.Errorf("verify: %d %s", w.Code, w.Body.String())
				return
			}
		}
	})
}

// BenchmarkProfileRotate is Registry.Rotate (the agent's row and previous
// certificate read and superseded, the rest as in a registration, the name's
// VRF proof from the cache) from 4 goroutines, over 64 agents so that two
// rotations of one agent rarely meet (one in flight per name).
func BenchmarkProfileRotate(b *testing.B) {
	f := registrytest.NewFixture(b, registrytest.WithDatabase(profileDB()))
	owner := f.Owner("bench", "bench")
	agents := benchAgents(b)
	for i := range agents {
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(context.Background(), owner, registry.RegisterRequest{
			Name: fmt.Sprintf("r%02d.bench", i), CSR: csr}); err != nil {
			b.Fatal(err)
		}
	}
	runIssuances(b, f, func(i int64, csr []byte) error {
		_, err := f.Registry.Rotate(context.Background(), owner, fmt.Sprintf("r%02d.bench", i%int64(agents)), csr)
		if errors.Is(err, registry.ErrConflict) {
			return nil // the same agent's rotation still in flight
		}
		return err
	})
}

// BenchmarkProfileCRL is the making of a full CRL (Registry.CRL after the
// revocation revision moved): ATR_BENCH_CRL_ENTRIES revoked certificates
// (default 20,000) read, listed and signed on the token; reports the CPU per
// entry.
func BenchmarkProfileCRL(b *testing.B) {
	f := registrytest.NewFixture(b, registrytest.WithDatabase(profileDB()))
	ctx := context.Background()
	csr, _ := f.NewCSR()
	iss, err := f.Registry.Register(ctx, f.Owner("bench", "bench"), registry.RegisterRequest{Name: "probe.bench", CSR: csr})
	if err != nil {
		b.Fatal(err)
	}
	db, pg, err := openDB(ctx, f.DatabaseURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n := envInt(b, "ATR_BENCH_CRL_ENTRIES", 20000, 1)
	if _, err := (&filler{db: db, postgres: pg}).fill(ctx, n, "bench", true, f.ParseCertificate(iss.CertificatePEM).Raw); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	stop := reportCPU(b)
	for range b.N {
		b.StopTimer()
		if _, err := db.ExecContext(ctx, `UPDATE revocation_state SET seq = seq + 1 WHERE id = 1`); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		der, _, err := f.Registry.CRL(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(der) < 20*n {
			b.Fatalf("a CRL of %d bytes for %d entries", len(der), n)
		}
	}
	stop()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/entry")
}
