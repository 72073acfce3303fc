// Command atr-bench measures a real `atr serve` over HTTPS against the raw
// limits of the machine it runs on, measured in the same run, and prints
// every figure next to its ratio to the relevant baseline (issue 7).
//
//	go run ./cmd/atr-bench --quick                 # SQLite, under two minutes
//	go run ./cmd/atr-bench --quick --json --database-url 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	go run ./cmd/atr-bench                         # full run (1,000,000 agents)
//	go run ./cmd/atr-bench --target https://host:8443 --ca-bundle bundle.pem --admin-key-file admin.apikey
//
// By default it builds cmd/atr (or uses --atr-binary), creates a temporary
// data directory with SoftHSM2 tokens (softhsm/init-tokens.sh), runs the
// ceremonies, creates API keys with `atr apikey create` and starts
// `atr serve` on a free loopback port. With --database-url postgres://… it
// creates a fresh database on that server and drops it at the end. The
// bench's raw baselines use a third token of their own.
//
// See docs/performance.md for the method and the figures.
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/cmd/internal/procstat"
	"github.com/agent-trust-registry/atr/hsm"
)

type options struct {
	quick, jsonOut, keep bool
	markdown             bool
	report               string
	target, caBundle     string
	adminKeyFile         string
	databaseURL          string
	atrBinary            string
	module               string
	parallel             int
}

// rotateConc is the issuance level whose agents are also rotated, at the
// same concurrency (the "issuance at c=32").
const rotateConc = 32

// plan sizes every phase; quick and full differ only here.
type plan struct {
	issuance     []struct{ conc, n int }
	pacedN       int
	verifyN      int
	verifyConc   int
	ocspN        int
	floorRounds  int
	floorN       int
	crlRevoked   int
	crlFetches   int
	scaleSmall   int
	scaleLarge   int
	scaleVerifyN int
	listN        int
	baselineDur  time.Duration
	tlogSizes    []int64
	tlogK        int
	tlogProofs   int
	tlogDBSize   int64
	tlogDBK      int
}

func newPlan(quick bool) plan {
	p := plan{
		issuance:     []struct{ conc, n int }{{1, 100}, {8, 400}, {32, 1000}},
		pacedN:       400,
		verifyN:      3000,
		verifyConc:   16,
		ocspN:        3000,
		floorRounds:  5,
		floorN:       6000,
		crlRevoked:   100_000,
		crlFetches:   20,
		scaleSmall:   1000,
		scaleLarge:   1_000_000,
		scaleVerifyN: 1000,
		listN:        64,
		baselineDur:  5 * time.Second,
		tlogSizes:    []int64{1000, 100_000, 1_000_000},
		tlogK:        16384,
		tlogProofs:   2000,
		tlogDBSize:   10_000,
		tlogDBK:      300,
	}
	if quick {
		p.issuance = []struct{ conc, n int }{{1, 20}, {8, 64}, {32, 128}}
		p.pacedN, p.verifyN, p.ocspN = 64, 600, 600
		p.floorRounds, p.floorN = 3, 3000
		p.crlRevoked, p.crlFetches = 5000, 10
		p.scaleLarge, p.scaleVerifyN, p.listN = 20_000, 600, 24
		p.baselineDur = 2 * time.Second
		p.tlogProofs = 1000
		p.tlogDBSize, p.tlogDBK = 1000, 100
	}
	return p
}

func main() {
	var o options
	fs := flag.NewFlagSet("atr-bench", flag.ExitOnError)
	fs.BoolVar(&o.quick, "quick", false, "smoke run (under two minutes): smaller counts, 1,000 vs 20,000 agents, 5,000 revoked")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON instead of a table")
	fs.BoolVar(&o.markdown, "markdown", false, "print the report as the Markdown of docs/performance.md's tables instead of a table")
	fs.StringVar(&o.report, "report", "", "run nothing: print the report FILE that --json wrote (as a table, or with --json or --markdown)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary data directory and database")
	fs.StringVar(&o.target, "target", "", "benchmark a running server at this https:// URL instead of starting one")
	fs.StringVar(&o.caBundle, "ca-bundle", "", "with --target: PEM CA bundle of the server (its ca/bundle.pem)")
	fs.StringVar(&o.adminKeyFile, "admin-key-file", "", "with --target: file holding an admin API key")
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL server (postgres://…): a fresh database is created on it (default: SQLite in the temp dir); with --target: the server's own database, for the bulk-load phases")
	fs.StringVar(&o.atrBinary, "atr-binary", "", "use this atr binary instead of building ./cmd/atr")
	fs.StringVar(&o.module, "pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module of the bench token")
	fs.IntVar(&o.parallel, "parallel", 8, "goroutines of the parallel raw baselines (N)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: atr-bench [flags]

Measures a real atr serve over HTTPS and prints each figure next to its ratio
to a raw baseline measured in the same run (docs/performance.md). Without
--target it starts the server itself: run it from the repository, whose
softhsm/init-tokens.sh makes the server's tokens.

Examples:
  atr-bench --quick                         # SQLite, about 30 s
  atr-bench --quick --database-url 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
  atr-bench --json > run.json               # full run, saved
  atr-bench --report run.json --markdown    # the saved run as docs/performance.md's table

Flags:
`)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if o.jsonOut && o.markdown {
		fmt.Fprintln(os.Stderr, "atr-bench: --json and --markdown exclude each other")
		os.Exit(2)
	}
	if o.report != "" {
		rep, err := readReport(o.report)
		if err == nil {
			err = o.write(rep)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "atr-bench:", err)
			os.Exit(1)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	rep, err := run(ctx, o, logrus.NewEntry(log).WithField("component", "atr-bench"))
	if rep != nil {
		_ = o.write(rep)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "atr-bench:", err)
		os.Exit(1)
	}
}

// write prints rep to standard output in the format the flags chose.
func (o options) write(rep *Report) error {
	switch {
	case o.jsonOut:
		return rep.WriteJSON(os.Stdout)
	case o.markdown:
		return rep.WriteMarkdown(os.Stdout)
	}
	return rep.WriteTable(os.Stdout)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "atr-bench: "+format+"\n", args...)
}

// newCSR returns a PEM CSR over a fresh ECDSA P-256 key.
func newCSR() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func newCSRs(n int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		c, err := newCSR()
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// run performs every phase; it returns the report even on error (with the
// rows measured so far).
func run(ctx context.Context, o options, log *logrus.Entry) (rep *Report, err error) {
	started := time.Now()
	p := newPlan(o.quick)
	rep = &Report{Started: started, Mode: "full", Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Database: "sqlite"}
	if o.quick {
		rep.Mode = "quick"
	}
	if strings.HasPrefix(o.databaseURL, "postgres") {
		rep.Database = "postgres"
	}
	defer func() { rep.Duration = time.Since(started).Seconds() }()

	// Step 1: the system under test.
	e := &benchEnv{}
	e.dataDir, err = os.MkdirTemp("", "atr-bench-")
	if err != nil {
		return rep, err
	}
	e.ownDir = true
	defer func() { e.stop(o.keep) }()

	// API keys: the probe's, then one per registerPerClient registrations of
	// each issuance phase (issuance levels, paced run, agents to revoke), then
	// the list clients of the two scale points.
	ceil := func(n, d int) int { return (n + d - 1) / d }
	regKeys := ceil(p.pacedN, registerPerClient) + ceil(6, registerPerClient)
	for _, l := range p.issuance {
		regKeys += ceil(l.n, registerPerClient)
		if l.conc == rotateConc {
			regKeys += ceil(l.n, registerPerClient) // the rotations of these agents
		}
	}
	listKeys := 2 * ceil(p.listN, listPerClient)
	nKeys := 1 + regKeys + listKeys
	specs := make([]keySpec, nKeys)
	for i := range specs {
		specs[i] = keySpec{owner: "bench", namespace: "bench", scopes: "agents:read,agents:write"}
	}
	var keys []string
	if o.target == "" {
		rep.Target = "started atr serve"
		repo, rerr := moduleRoot(ctx) // softhsm/init-tokens.sh, and ./cmd/atr unless --atr-binary
		if rerr != nil {
			return rep, rerr
		}
		if strings.HasPrefix(o.databaseURL, "postgres") {
			if err := e.createPostgres(ctx, o.databaseURL); err != nil {
				return rep, err
			}
		} else if o.databaseURL != "" {
			return rep, errors.New("--database-url: only postgres:// URLs (SQLite is the default, in the temp dir)")
		} else {
			e.dbURL = "sqlite:" + e.dataDir + "/atr.db"
		}
		progress("setting up %s (tokens, ceremonies, %d API keys)", e.dataDir, nKeys)
		if err := e.prepareTokens(ctx, repo, true); err != nil {
			return rep, err
		}
		if o.atrBinary != "" {
			e.bin = o.atrBinary
		} else if err := e.build(ctx, repo); err != nil {
			return rep, err
		}
		if err := e.ceremonies(ctx); err != nil {
			return rep, err
		}
		if keys, err = e.createKeys(ctx, specs); err != nil {
			return rep, err
		}
		if err := e.startServer(ctx); err != nil {
			return rep, err
		}
		b, err := os.ReadFile(e.dataDir + "/ca/bundle.pem")
		if err != nil {
			return rep, err
		}
		if err := e.loadBundle(b); err != nil {
			return rep, err
		}
	} else {
		rep.Target = o.target
		e.baseURL, e.dbURL = strings.TrimRight(o.target, "/"), o.databaseURL
		if o.databaseURL == "" {
			rep.Database = "unknown (target)"
		} else if !strings.HasPrefix(o.databaseURL, "postgres") {
			rep.Database = "sqlite"
		}
		if o.caBundle == "" || o.adminKeyFile == "" {
			return rep, errors.New("--target needs --ca-bundle and --admin-key-file")
		}
		b, err := os.ReadFile(o.caBundle)
		if err != nil {
			return rep, err
		}
		if err := e.loadBundle(b); err != nil {
			return rep, err
		}
		k, err := os.ReadFile(o.adminKeyFile)
		if err != nil {
			return rep, err
		}
		e.adminKey = strings.TrimSpace(string(k))
		if err := e.prepareTokens(ctx, "", false); err != nil {
			return rep, err
		}
	}
	cf, err := newClientFactory(e.baseURL, e.pool())
	if err != nil {
		return rep, err
	}
	if err := waitHealthy(ctx, e, cf); err != nil {
		return rep, err
	}
	if o.target != "" {
		if keys, err = createKeysOverAPI(ctx, cf, e.adminKey, len(specs)); err != nil {
			return rep, err
		}
	}
	clients := make([]*benchClient, len(keys))
	for i, k := range keys {
		if clients[i], err = cf.client(k); err != nil {
			return rep, err
		}
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	// hwm notes the server's peak RSS so far after a phase (where memory goes).
	hwm := func(phase string) {
		if e.isStarted() {
			if _, peak, err := rss(e.serverPID()); err == nil {
				note := fmt.Sprintf("server VmHWM after %s: %.0f MiB", phase, float64(peak)/1024)
				if n, err := settledOpenFiles(e.serverPID()); err == nil {
					note += fmt.Sprintf(" (%d open descriptors now)", n)
				}
				rep.Notes = append(rep.Notes, note)
			}
		}
	}
	probeClient, regClients, listClients := clients[0], clients[1:1+regKeys:1+regKeys], clients[1+regKeys:]

	// Step 2: a probe agent: its certificate is the chain the verify
	// baseline and the verify/OCSP/scale phases use.
	csr, err := newCSR()
	if err != nil {
		return rep, err
	}
	probe, err := probeClient.api.Register(ctx, client.RegisterRequest{Name: "probe.bench", CSR: string(csr)})
	if err != nil {
		return rep, fmt.Errorf("registering the probe agent: %w", err)
	}
	leafs, err := ca.ParseCertificatesPEM([]byte(probe.Certificate), 1)
	if err != nil {
		return rep, err
	}
	leaf := leafs[0]
	chainCerts, err := ca.ParseCertificatesPEM([]byte(probe.Chain), 8)
	if err != nil {
		return rep, err
	}

	// Step 3: raw baselines, on the bench's own token, while the server idles.
	progress("raw token baselines (%s each)", p.baselineDur)
	if err := os.Setenv("SOFTHSM2_CONF", e.confFile()); err != nil {
		return rep, err
	}
	pin, err := hsm.ReadPIN(e.pinFile(), "")
	if err != nil {
		return rep, err
	}
	tb, err := openTokenBench(ctx, hsm.Config{Module: o.module, TokenLabel: benchTokenLabel, PIN: pin}, log)
	if err != nil {
		return rep, err
	}
	defer tb.close()
	par := fmt.Sprintf(" (%d goroutines)", o.parallel)
	signOne, signPar := tb.sign(ctx, p.baselineDur, 1), tb.sign(ctx, p.baselineDur, o.parallel)
	createOne, createParS := tb.create(ctx, p.baselineDur, 1), tb.create(ctx, p.baselineDur, o.parallel)
	rep.add(
		rateRow("baseline", "HSM ECDSA P-256 sign, 1 goroutine", signOne),
		rateRow("baseline", "HSM ECDSA P-256 sign"+par, signPar),
		rateRow("baseline", "x509.CreateCertificate via token, 1", createOne),
		rateRow("baseline", "x509.CreateCertificate via token"+par, createParS),
	)
	createPar := createParS.Rate()

	// Step 3b: the small scale point, before issuance adds agents: verify
	// and list with scaleSmall agents in the database (the probe and filler).
	var fill *filler
	var small, smallList Stats
	n1 := ""
	if e.dbURL != "" {
		db, pg, err := openDB(ctx, e.dbURL)
		if err != nil {
			return rep, fmt.Errorf("opening the server's database: %w", err)
		}
		defer db.Close()
		fill = &filler{db: db, postgres: pg}
		have, err := fill.countAgents(ctx)
		if err != nil {
			return rep, err
		}
		if have < p.scaleSmall {
			progress("scale: loading %d agents (to %d)", p.scaleSmall-have, p.scaleSmall)
			if _, err := fill.fill(ctx, p.scaleSmall-have, "bench", false, []byte{0x30}); err != nil {
				return rep, err
			}
		}
		if small, smallList, err = scaleLoad(ctx, cf, listClients[:listKeys/2], probe, p); err != nil {
			return rep, err
		}
		n1 = humanCount(int64(max(have, p.scaleSmall)))
		rep.add(latencyRow("scale", "verify p50 @"+n1+" agents", small), latencyRow("scale", "list page @"+n1+" agents", smallList))
	}

	// Step 4: issuance at each concurrency, CSRs made before the clock.
	phases := &phaseClients{f: cf, all: regClients, pgDB: e.pgDBName}
	if e.isStarted() {
		phases.pid = e.serverPID()
	}
	var validPEM []string
	for _, l := range p.issuance {
		progress("issuance: %d registrations at concurrency %d", l.n, l.conc)
		csrs, err := newCSRs(l.n)
		if err != nil {
			return rep, err
		}
		var mu sync.Mutex
		var s Stats
		use, err := phases.run(ctx, l.n, l.conc, func(cs []*benchClient) error {
			s = runN(ctx, l.n, l.conc, func(ctx context.Context, i int) error {
				c, err := cs[i/registerPerClient].api.Register(ctx, client.RegisterRequest{
					Name: fmt.Sprintf("c%d-%05d.bench", l.conc, i), CSR: string(csrs[i])})
				if err == nil && l.conc == 1 {
					mu.Lock()
					validPEM = append(validPEM, c.Certificate)
					mu.Unlock()
				}
				return err
			})
			return nil
		})
		if err != nil {
			return rep, err
		}
		target := ""
		if l.conc == rotateConc {
			target = ">=0.2"
		}
		rep.add(rateRow("issuance", fmt.Sprintf("register, concurrency %d", l.conc), s).
			withRatio(s.Rate(), createPar, "CreateCertificate"+par, target).withUse(use))
		if l.conc != rotateConc {
			continue
		}
		// The same agents rotated: a new certificate for a known name, what
		// a fleet of short-lived certificates mostly asks for. A registration
		// also pays its name's VRF proof, an RSA signature on the token; a
		// rotation takes its name's proofs from the cache.
		progress("issuance: %d rotations at concurrency %d", l.n, l.conc)
		if csrs, err = newCSRs(l.n); err != nil {
			return rep, err
		}
		var rs Stats
		use, err = phases.run(ctx, l.n, l.conc, func(cs []*benchClient) error {
			rs = runN(ctx, l.n, l.conc, func(ctx context.Context, i int) error {
				_, err := cs[i/registerPerClient].api.Rotate(ctx, fmt.Sprintf("c%d-%05d.bench", l.conc, i), csrs[i])
				return err
			})
			return nil
		})
		if err != nil {
			return rep, err
		}
		rep.add(rateRow("issuance", fmt.Sprintf("rotate, concurrency %d", l.conc), rs).
			withRatio(rs.Rate(), createPar, "CreateCertificate"+par, ">=0.2").withUse(use))
	}

	// Issuance latency under an open-loop load at half the concurrency-32
	// throughput (the "p99 < 50 ms at half that rate").
	if r, ok := rep.find("issuance", "register, concurrency 32"); ok && r.Value > 0 {
		rate := r.Value / 2
		n := p.pacedN
		progress("issuance: %d registrations paced at %.0f/s", n, rate)
		csrs, err := newCSRs(n)
		if err != nil {
			return rep, err
		}
		var s Stats
		// A client's registerPerClient paced requests may all overlap
		// when the server slows: a connection for each.
		use, err := phases.run(ctx, n, registerPerClient, func(cs []*benchClient) error {
			s = runPaced(ctx, n, rate, func(ctx context.Context, i int) error {
				_, err := cs[i/registerPerClient].api.Register(ctx, client.RegisterRequest{
					Name: fmt.Sprintf("paced-%05d.bench", i), CSR: string(csrs[i])})
				return err
			})
			return nil
		})
		if err != nil {
			return rep, err
		}
		row := rateRow("issuance", fmt.Sprintf("register, open loop at %.0f/s (half of c=32)", rate), s)
		rep.add(row.withRatio(row.P99ms, 50, "p99 vs 50 ms", "<=1").withUse(use))
	}

	hwm("issuance")

	// Step 5: verify of valid, revoked and unknown certificates.
	progress("verify: %d requests per kind", p.verifyN)
	var revokedPEM, unknownPEM, unknownSerial string
	if _, err := phases.run(ctx, 6, 1, func(cs []*benchClient) error {
		for i := range 6 {
			csr, err := newCSR()
			if err != nil {
				return err
			}
			c, err := cs[0].api.Register(ctx, client.RegisterRequest{Name: fmt.Sprintf("rv%d.bench", i), CSR: string(csr)})
			if err != nil {
				return fmt.Errorf("registering agents to revoke: %w", err)
			}
			if i == 5 {
				unknownPEM, unknownSerial = c.Certificate, c.Serial
				return nil
			}
			if _, err := cs[0].api.Revoke(ctx, c.Name, "keyCompromise"); err != nil {
				return fmt.Errorf("revoking: %w", err)
			}
			revokedPEM = c.Certificate
		}
		return nil
	}); err != nil {
		return rep, err
	}
	if fill != nil {
		if err := fill.deleteCertificate(ctx, unknownSerial); err != nil {
			return rep, fmt.Errorf("deleting a certificate row: %w", err)
		}
	}
	foreignPEM, err := foreignCertificate()
	if err != nil {
		return rep, err
	}
	kinds := []struct {
		name, cert string
		want       func(*client.VerifyResult) bool
	}{
		{"valid", probe.Certificate, func(r *client.VerifyResult) bool { return r.Verified }},
		{"revoked", revokedPEM, func(r *client.VerifyResult) bool { return !r.Verified && r.Reason == "revoked" }},
		{"unknown (foreign CA)", foreignPEM, func(r *client.VerifyResult) bool { return !r.Verified }},
	}
	if fill != nil {
		kinds = append(kinds, struct {
			name, cert string
			want       func(*client.VerifyResult) bool
		}{"unknown (chains, not in registry)", unknownPEM, func(r *client.VerifyResult) bool { return !r.Verified }})
	}
	// The verify baseline is taken right before the verify load, so that
	// both see the same neighbours on the shared cores.
	verifyBase := measureVerifyBaseline(ctx, leaf, e.roots, append(chainCerts, e.inters...), p.baselineDur)
	rep.add(rateRow("baseline", "x509.Certificate.Verify agent chain, 1 core", verifyBase))
	verifyOne := verifyBase.Rate()
	for _, k := range kinds {
		s, err := verifyLoad(ctx, cf, k.cert, probe.Chain, p.verifyN, p.verifyConc, k.want)
		if err != nil {
			return rep, err
		}
		target := ""
		if k.name == "valid" {
			target = ">=1.5"
		}
		rep.add(rateRow("verify", k.name+fmt.Sprintf(", concurrency %d", p.verifyConc), s).
			withRatio(s.Rate(), verifyOne, "x509 Verify, 1 core", target))
	}

	// Step 6: OCSP.
	progress("OCSP")
	signPar2 := tb.sign(ctx, p.baselineDur, o.parallel)
	rep.add(rateRow("baseline", "HSM ECDSA P-256 sign"+par+", again before OCSP", signPar2))
	signParRate := signPar2.Rate()
	or, ocspReq := ocspLoad(ctx, cf, e.baseURL, leaf, chainCerts, p.ocspN, p.verifyConc)
	rep.add(or.withRatio(or.Value, signParRate, "HSM sign"+par, ">=1"))

	// The HTTPS floor of this box (issue 14): verify and OCSP against GET
	// /healthz, in interleaved rounds.
	progress("floor: %d rounds of %d requests each: GET /healthz, verify with and without its receipt and, when it answers, OCSP", p.floorRounds, p.floorN)
	serverPID := 0
	if e.isStarted() {
		serverPID = e.serverPID()
	}
	rep.add(floorLoad(ctx, cf, e.baseURL, serverPID, p.floorRounds, p.floorN, p.verifyConc, probe.Certificate, probe.Chain, ocspReq)...)

	hwm("verify and OCSP")

	// Step 7: scale (the large point), CRL.
	var large, largeList Stats
	if fill == nil {
		rep.add(unavailable("scale", "verify/list at 1,000 vs many agents", "no database access (--database-url)"),
			unavailable("crl", "CRL fetch", "no database access (--database-url)"))
	} else {
		// CRL with N revoked entries.
		pc, err := cf.client("")
		if err != nil {
			return rep, err
		}
		if _, err := pc.do(ctx, "GET", e.baseURL+"/v1/crl", "", nil); err != nil {
			var se *statusError
			if errors.As(err, &se) && se.status == 501 {
				rep.add(unavailable("crl", "CRL fetch", "GET /v1/crl answers 501 on this build"))
			} else {
				rep.add(unavailable("crl", "CRL fetch", oneLine(err.Error())))
			}
		} else {
			progress("CRL: loading %d revoked certificates", p.crlRevoked)
			if _, err := fill.fill(ctx, p.crlRevoked, "bench", true, leaf.Raw); err != nil {
				return rep, err
			}
			rep.add(crlLoad(ctx, pc, e.baseURL, p.crlRevoked, p.crlFetches)...)
			hwm("the CRL fetches")
		}
		pc.close()

		have, err := fill.countAgents(ctx)
		if err != nil {
			return rep, err
		}
		if have < p.scaleLarge {
			progress("scale: loading %d agents (to %d)", p.scaleLarge-have, p.scaleLarge)
			d, err := fill.fill(ctx, p.scaleLarge-have, "bench", false, []byte{0x30})
			if err != nil {
				return rep, err
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("bulk load of %d agents took %.1f s", p.scaleLarge-have, d.Seconds()))
		}
		large, largeList, err = scaleLoad(ctx, cf, listClients[listKeys/2:], probe, p)
		if err != nil {
			return rep, err
		}
		hwm("the large scale point")
		n2 := humanCount(int64(max(have, p.scaleLarge)))
		rep.add(latencyRow("scale", "verify p50 @"+n2+" agents", large).
			withRatio(ms(large.P99), ms(small.P99), "verify p99 @"+n1, "<=1.5"),
			latencyRow("scale", "list page @"+n2+" agents", largeList).
				withRatio(ms(largeList.P99), ms(smallList.P99), "list p99 @"+n1, ""))
	}

	// Step 8: the transparency log, in process.
	progress("transparency log: in memory to %s", humanCount(p.tlogSizes[len(p.tlogSizes)-1]))
	pts, err := measureMemLog(ctx, p.tlogSizes, p.tlogK, p.tlogProofs)
	if err != nil {
		return rep, err
	}
	for i, pt := range pts {
		r := Row{Group: "translog", Name: "append+root @" + humanCount(pt.size) + " (in-memory HashStore)",
			Value: float64(pt.perOp) / 1e3, Unit: "µs/entry", N: p.tlogK}
		a := Row{Group: "translog", Name: "append only @" + humanCount(pt.size) + " (in-memory HashStore)",
			Value: float64(pt.appendOnly) / 1e3, Unit: "µs/entry", N: p.tlogK}
		if i == len(pts)-1 {
			r = r.withRatio(float64(pt.perOp), float64(pts[0].perOp), "append+root @"+humanCount(pts[0].size), "<=1.5")
			a = a.withRatio(float64(pt.appendOnly), float64(pts[0].appendOnly), "append only @"+humanCount(pts[0].size), "")
		}
		rep.add(r, a)
	}
	last := pts[len(pts)-1]
	rep.add(latencyRow("translog", "inclusion proof @"+humanCount(last.size)+" (in-memory)", last.proofs))
	if fill != nil {
		progress("transparency log: in the database at %s", humanCount(p.tlogDBSize))
		dp, err := measureDBLog(ctx, fill.db, fill.postgres, p.tlogDBSize, p.tlogDBK, 200)
		if err != nil {
			return rep, err
		}
		rep.add(Row{Group: "translog", Name: fmt.Sprintf("append+root @%s (%s, 1 tx each)", humanCount(dp.size), rep.Database),
			Value: float64(dp.perOp) / 1e3, Unit: "µs/entry", N: p.tlogDBK},
			latencyRow("translog", fmt.Sprintf("inclusion proof @%s (%s)", humanCount(dp.size), rep.Database), dp.proofs))
	}

	// The registry's own proofs over its log tables, through the API.
	if s, size, err := proofLoad(ctx, cf, p.scaleVerifyN); err != nil {
		rep.add(unavailable("translog", "inclusion proof via API", oneLine(err.Error())))
	} else {
		rep.add(latencyRow("translog", fmt.Sprintf("inclusion proof via API @%d entries (server's %s)", size, rep.Database), s))
	}

	// Step 9: the server's memory at the end.
	if e.isStarted() {
		cur, peak, err := rss(e.serverPID())
		if err != nil {
			rep.add(unavailable("memory", "server RSS", err.Error()))
		} else {
			rep.add(Row{Group: "memory", Name: "server VmRSS at end", Value: float64(cur) / 1024, Unit: "MiB"},
				Row{Group: "memory", Name: "server VmHWM (peak RSS)", Value: float64(peak) / 1024, Unit: "MiB"}.
					withRatio(float64(peak)/1024, 256, "256 MiB budget", "<=1"))
		}
	} else {
		rep.add(unavailable("memory", "server RSS", "--target: not our process"))
	}
	rep.Notes = append(rep.Notes,
		"the load generator runs on the same cores as the server (shared machine): absolute figures are noisy; compare ratios",
		"load is spread over many API keys and loopback source addresses, each inside the server's default rate-limit bursts (limits are never raised or switched off for the benchmark)")
	return rep, nil
}

// waitHealthy polls /healthz until it answers 200 (and fails early if the
// server exits).
func waitHealthy(ctx context.Context, e *benchEnv, cf *clientFactory) error {
	c, err := cf.client("")
	if err != nil {
		return err
	}
	defer c.close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.api.Health(hctx)
		cancel()
		if err == nil {
			return nil
		}
		if e.server != nil && e.server.ProcessState != nil {
			return fmt.Errorf("atr serve exited (see %s/serve.log)", e.dataDir)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("server not healthy after 60 s: %w (see %s/serve.log)", err, e.dataDir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createKeysOverAPI creates n owner keys through the admin API (target mode).
func createKeysOverAPI(ctx context.Context, cf *clientFactory, admin string, n int) ([]string, error) {
	keys := make([]string, n)
	var c *benchClient
	for i := range keys {
		if i%20 == 0 { // stay inside the admin key's per-IP burst
			var err error
			if c, err = cf.client(admin); err != nil {
				return nil, err
			}
		}
		for {
			k, err := c.api.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Owner: "bench", Namespace: "bench",
				Scopes: []string{"agents:read", "agents:write"}, ExpiresIn: "24h"})
			var ce *client.Error
			if errors.As(err, &ce) && ce.Status == 429 {
				time.Sleep(max(ce.RetryAfter, time.Second))
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("creating API keys: %w", err)
			}
			keys[i] = k.Key
			break
		}
	}
	return keys, nil
}

// foreignCertificate is an agent-shaped certificate from a CA the server
// does not trust.
func foreignCertificate() (string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	root, err := ca.RootTemplate("foreign CA", time.Hour, now)
	if err != nil {
		return "", err
	}
	rootCert, err := ca.CreateCertificate(root, root, k.Public(), k)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTemplate(now), rootCert, k.Public(), k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// verifyLoad sends n verify requests for cert at concurrency conc, spread
// over public clients; an answer that want refuses counts as an error.
func verifyLoad(ctx context.Context, cf *clientFactory, cert, chain string, n, conc int, want func(*client.VerifyResult) bool) (Stats, error) {
	s, _, err := publicRun(ctx, cf, n, conc, verifyOp(cert, chain, true, want), 0)
	return s, err
}

// verifyOp is one verify request for cert, with the receipt (the API's
// default) or without (rp.OnlineChecker's); an answer that want refuses is
// an error.
func verifyOp(cert, chain string, receipt bool, want func(*client.VerifyResult) bool) publicOp {
	return func(ctx context.Context, c *benchClient) error {
		verify := c.api.Verify
		if !receipt {
			verify = c.api.VerifyWithoutReceipt
		}
		r, err := verify(ctx, []byte(cert), []byte(chain))
		if err != nil {
			return err
		}
		if !want(r) {
			return fmt.Errorf("unexpected verify answer: verified=%v reason=%q", r.Verified, r.Reason)
		}
		return nil
	}
}

// ocspOp is one OCSP request.
func ocspOp(base string, req []byte) publicOp {
	return func(ctx context.Context, c *benchClient) error {
		b, err := c.do(ctx, "POST", base+"/v1/ocsp", "application/ocsp-request", req)
		if err == nil && len(b) == 0 {
			err = errors.New("empty OCSP response")
		}
		return err
	}
}

// publicOp is one public request through client c.
type publicOp func(ctx context.Context, c *benchClient) error

// publicRun sends op n times at concurrency conc through warmed public
// clients (publicPerClient requests each). With the server's pid (> 0) it
// also returns the CPU the server and this process used inside the timed
// window (zero when pid is 0 or /proc could not be read).
func publicRun(ctx context.Context, cf *clientFactory, n, conc int, op publicOp, pid int) (Stats, cpuUse, error) {
	cs, err := cf.warmClients(ctx, n, conc)
	if err != nil {
		return Stats{}, cpuUse{}, err
	}
	defer closeAll(cs)
	u0 := readCPU(pid)
	s := runN(ctx, n, conc, func(ctx context.Context, i int) error { return op(ctx, cs[i/publicPerClient]) })
	return s, readCPU(pid).since(u0), nil
}

// cpuUse is CPU time used by the server (unknown: serverOK false) and by
// this process.
type cpuUse struct {
	server, self time.Duration
	serverOK     bool
}

func readCPU(pid int) cpuUse {
	u := cpuUse{self: procstat.Self()}
	if pid > 0 {
		var err error
		u.server, err = procCPU(pid)
		u.serverOK = err == nil
	}
	return u
}

func (u cpuUse) since(before cpuUse) cpuUse {
	return cpuUse{server: u.server - before.server, self: u.self - before.self, serverOK: u.serverOK && before.serverOK}
}

func (u cpuUse) add(v cpuUse) cpuUse {
	return cpuUse{server: u.server + v.server, self: u.self + v.self, serverOK: u.serverOK && v.serverOK}
}

// The floor's ratio rows (floorLoad).
const (
	floorVerifyName = "verify (valid) rate / GET /healthz rate"
	floorBareName   = "verify (valid), no receipt, rate / GET /healthz rate"
	floorOCSPName   = "OCSP rate / GET /healthz rate"
)

// floorLoad measures the HTTPS floor of this box against verify (of the
// valid certificate cert, with its receipt and without) and OCSP (ocspReq;
// nil: not measured): rounds of n GET /healthz, n verifies of each kind and
// n OCSP requests at concurrency conc,
// each load through its own warmed clients, the order rotated from round to
// round. Each ratio is taken within a round, from loads seconds apart, and
// the rows report the median over the rounds: one sequential pass of a few
// hundred requests each moved with whatever else the two shared cores did
// in its fraction of a second. With the server's pid (0: not ours), the
// notes give the CPU per request of atr serve (not of a PostgreSQL server,
// which these requests do not use) and of this load generator, which
// shares the cores.
func floorLoad(ctx context.Context, cf *clientFactory, base string, pid, rounds, n, conc int, cert, chain string, ocspReq []byte) []Row {
	hzName := fmt.Sprintf("GET /healthz, concurrency %d", conc)
	verified := func(r *client.VerifyResult) bool { return r.Verified }
	ops := []publicOp{
		func(ctx context.Context, c *benchClient) error {
			_, err := c.do(ctx, "GET", base+"/healthz", "", nil)
			return err
		},
		verifyOp(cert, chain, true, verified),
	}
	names := []string{hzName, floorVerifyName}
	// The target is for verify as the API answers by default, with
	// the receipt; without it is what cmd/atr's online check asks, measured
	// beside it when the server takes "receipt": false (a server older than
	// that field refuses it: the row says so, the others are measured).
	targets := []string{"", ">=0.7"}
	var bareRow *Row
	bare := verifyOp(cert, chain, false, verified)
	if s, _, err := publicRun(ctx, cf, 1, 1, bare, 0); err != nil || s.Errors > 0 {
		if err == nil {
			err = s.FirstErr
		}
		r := unavailable("floor", floorBareName, "not measured: "+oneLine(err.Error()))
		bareRow = &r
	} else {
		ops, names, targets = append(ops, bare), append(names, floorBareName), append(targets, "")
	}
	if ocspReq != nil {
		ops, names, targets = append(ops, ocspOp(base, ocspReq)), append(names, floorOCSPName), append(targets, ">=0.7")
	}
	rates := make([][]float64, len(ops)) // by op, then round
	served := make([]int, len(ops))
	used := make([]cpuUse, len(ops))
	for k := range used {
		used[k].serverOK = pid > 0
	}
	for r := range rounds {
		for k := range ops {
			which := (k + r) % len(ops)
			s, u, err := publicRun(ctx, cf, n, conc, ops[which], pid)
			if err == nil && s.Errors > 0 {
				err = s.FirstErr
			}
			if err != nil {
				rows := make([]Row, len(ops))
				for i, name := range names {
					why := fmt.Sprintf("not measured: %s failed in round %d", names[which], r+1)
					if i == which {
						why = oneLine(err.Error())
					}
					rows[i] = unavailable("floor", name, why)
				}
				if bareRow != nil {
					rows = append(rows, *bareRow)
				}
				return rows
			}
			rates[which] = append(rates[which], s.Rate())
			served[which] += s.N
			used[which] = used[which].add(u)
		}
	}
	// cpu says what one request of op k cost the server and this process.
	cpu := func(k int) string {
		per := func(d time.Duration) string {
			return sig3(float64(d.Microseconds()) / float64(served[k]))
		}
		srv := "atr serve unknown"
		if used[k].serverOK {
			srv = "atr serve " + per(used[k].server) + " µs"
		}
		return fmt.Sprintf("; CPU per request: %s, load generator %s µs", srv, per(used[k].self))
	}
	hz := Row{Group: "floor", Name: hzName, Value: medianOf(rates[0]), Unit: "ops/s", N: served[0],
		Note: fmt.Sprintf("median of %d rounds: %s%s", rounds, spread(rates[0]), cpu(0))}
	ratioRow := func(k int) Row {
		ratios := make([]float64, len(rates[k]))
		for i := range ratios {
			ratios[i] = rates[k][i] / rates[0][i]
		}
		return Row{Group: "floor", Name: names[k], Value: medianOf(rates[k]), Unit: "ops/s", N: served[k],
			Note: fmt.Sprintf("median of %d interleaved rounds; per round %s%s", rounds, spread(ratios), cpu(k))}.
			withRatio(medianOf(ratios), 1, "GET /healthz", targets[k])
	}
	rows := []Row{hz}
	for k := 1; k < len(ops); k++ {
		if names[k] == floorOCSPName && bareRow != nil {
			rows = append(rows, *bareRow)
			bareRow = nil
		}
		row := ratioRow(k)
		if names[k] == floorVerifyName {
			row.Note += verifyAnswerSize(ctx, cf, base, cert, chain)
		}
		rows = append(rows, row)
	}
	if bareRow != nil {
		rows = append(rows, *bareRow)
	}
	return rows
}

// verifyAnswerSize is a note on the size of the verify answer (with its
// receipt) the floor measured: its body and its header as HTTP/1.1 writes
// them. net/http's server writes an answer through a 4 KiB buffer, and an
// answer past it took two writes before api.CoalescingListener
// (docs/performance.md, "One write an answer"); the receipt's inclusion
// proof grows with the log.
func verifyAnswerSize(ctx context.Context, cf *clientFactory, base, cert, chain string) string {
	c, err := cf.client("")
	if err != nil {
		return ""
	}
	defer c.hc.CloseIdleConnections()
	body, _ := json.Marshal(client.VerifyRequest{Certificate: cert, Chain: chain})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/verify", bytes.NewReader(body))
	if err != nil {
		return ""
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return ""
	}
	var hdr bytes.Buffer
	fmt.Fprintf(&hdr, "HTTP/1.1 %s\r\n", resp.Status)
	resp.Header.Write(&hdr)
	hdr.WriteString("\r\n")
	return fmt.Sprintf("; the answer: %d bytes of body, %d of status line and header", len(b), hdr.Len())
}

// medianOf returns the median of v (0 for none), leaving v as it was.
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is "lo–hi" of v with three significant digits.
func spread(v []float64) string {
	if len(v) == 0 {
		return "none"
	}
	return sig3(slices.Min(v)) + "–" + sig3(slices.Max(v))
}

// ocspLoad posts n OCSP requests for leaf and returns the row and the
// request (nil when the row is unavailable). A 501 answer makes the row
// unavailable.
func ocspLoad(ctx context.Context, cf *clientFactory, base string, leaf *x509.Certificate, chain []*x509.Certificate, n, conc int) (Row, []byte) {
	const name = "responses, concurrency 16"
	if len(chain) == 0 {
		return unavailable("ocsp", name, "no issuer certificate in the chain"), nil
	}
	req, err := ocsp.CreateRequest(leaf, chain[0], &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return unavailable("ocsp", name, err.Error()), nil
	}
	pc, err := cf.client("")
	if err != nil {
		return unavailable("ocsp", name, err.Error()), nil
	}
	body, err := pc.do(ctx, "POST", base+"/v1/ocsp", "application/ocsp-request", req)
	pc.close()
	if err != nil {
		var se *statusError
		if errors.As(err, &se) && se.status == 501 {
			return unavailable("ocsp", name, "POST /v1/ocsp answers 501 on this build"), nil
		}
		return unavailable("ocsp", name, oneLine(err.Error())), nil
	}
	resp, err := ocsp.ParseResponse(body, chain[0])
	if err != nil {
		return unavailable("ocsp", name, "bad OCSP response: "+oneLine(err.Error())), nil
	}
	if resp.Status != ocsp.Good {
		return unavailable("ocsp", name, fmt.Sprintf("OCSP status %d for a valid certificate", resp.Status)), nil
	}
	s, _, err := publicRun(ctx, cf, n, conc, ocspOp(base, req), 0)
	if err != nil {
		return unavailable("ocsp", name, oneLine(err.Error())), nil
	}
	return rateRow("ocsp", name, s), req
}

// crlLoad fetches the CRL until it lists the revoked rows the bench wrote
// into the database (the server sees a commit of another process within
// its notifier's poll, 250 ms on SQLite; the first fetch after that may
// regenerate the CRL) and then fetches times more.
func crlLoad(ctx context.Context, c *benchClient, base string, revoked, fetches int) []Row {
	name := fmt.Sprintf("fetch with ≥%s revoked", humanCount(int64(revoked)))
	const settle = 10 * time.Second
	var (
		der     []byte
		entries int
		last    time.Duration
		err     error
	)
	t0 := time.Now()
	for {
		t := time.Now()
		if der, err = c.do(ctx, "GET", base+"/v1/crl", "", nil); err != nil {
			return []Row{unavailable("crl", name, oneLine(err.Error()))}
		}
		last = time.Since(t)
		entries = -1
		if rl, err := x509.ParseRevocationList(der); err == nil {
			entries = len(rl.RevokedCertificateEntries)
		}
		if entries >= revoked || time.Since(t0) > settle {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if entries < revoked {
		return []Row{unavailable("crl", name, fmt.Sprintf("after %v the CRL lists %d entries, fewer than the %d revoked", settle, entries, revoked))}
	}
	listed := time.Since(t0)
	s := runN(ctx, fetches, 1, func(ctx context.Context, _ int) error {
		_, err := c.do(ctx, "GET", base+"/v1/crl", "", nil)
		return err
	})
	r := latencyRow("crl", name, s)
	r.Note = fmt.Sprintf("listed %.0f ms after the load (the fetch that regenerated it %.0f ms); %d entries, %d KiB", ms(listed), ms(last), entries, len(der)/1024)
	return []Row{r}
}

// scaleLoad measures verify latency of the probe certificate (concurrency
// 4) and list latency (walking pages of 50 with the cursor, one at a time).
func scaleLoad(ctx context.Context, cf *clientFactory, listClients []*benchClient, probe *client.Certificate, p plan) (Stats, Stats, error) {
	v, err := verifyLoad(ctx, cf, probe.Certificate, probe.Chain, p.scaleVerifyN, 4,
		func(r *client.VerifyResult) bool { return r.Verified })
	if err != nil {
		return v, Stats{}, err
	}
	// One connection per list client (listPerClient pages each), opened
	// before the clock.
	if err := cf.warm(ctx, listClients, 1); err != nil {
		return v, Stats{}, err
	}
	cursor := ""
	l := runN(ctx, p.listN, 1, func(ctx context.Context, i int) error {
		page, err := listClients[i/listPerClient].api.List(ctx, cursor, 50)
		if err != nil {
			return err
		}
		cursor = page.NextCursor
		return nil
	})
	return v, l, nil
}

// proofLoad asks the server for n inclusion proofs of random entries of its
// current tree (concurrency 4) and returns the tree size used.
func proofLoad(ctx context.Context, cf *clientFactory, n int) (Stats, int64, error) {
	c, err := cf.client("")
	if err != nil {
		return Stats{}, 0, err
	}
	defer c.close()
	note, err := c.api.Checkpoint(ctx)
	if err != nil {
		return Stats{}, 0, err
	}
	lines := strings.SplitN(string(note), "\n", 3)
	if len(lines) < 3 {
		return Stats{}, 0, errors.New("malformed checkpoint")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 1 {
		return Stats{}, 0, fmt.Errorf("checkpoint size %q", lines[1])
	}
	const conc = 4
	cs, err := cf.warmClients(ctx, n, conc)
	if err != nil {
		return Stats{}, 0, err
	}
	defer closeAll(cs)
	var mu sync.Mutex
	r := mrand.New(mrand.NewPCG(5, 6))
	return runN(ctx, n, conc, func(ctx context.Context, i int) error {
		mu.Lock()
		idx := r.Int64N(size)
		mu.Unlock()
		_, err := cs[i/publicPerClient].api.InclusionProof(ctx, idx, size)
		return err
	}), size, nil
}
