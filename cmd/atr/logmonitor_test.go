package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// monitorServer is a real registry served over HTTPS in-process, with
// faults a test can switch on.
type monitorServer struct {
	f   *registrytest.Fixture
	srv *httptest.Server

	mu sync.Mutex
	// failEntriesFrom makes GET /v1/log/entries fail for start ≥ it (the
	// monitor "killed" mid-scan); -1: never.
	failEntriesFrom int64
	// lieVRF makes POST /v1/log/vrf answer another name's index.
	lieVRF bool
}

func (m *monitorServer) set(f func(m *monitorServer)) {
	m.mu.Lock()
	f(m)
	m.mu.Unlock()
}

func newMonitorServer(t *testing.T) *monitorServer {
	t.Helper()
	f := registrytest.NewFixture(t)
	s, err := api.New(api.Config{TrustDomain: registrytest.TrustDomain, TLS: true},
		api.Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, f.Log)
	if err != nil {
		t.Fatal(err)
	}
	ms := &monitorServer{f: f, failEntriesFrom: -1}
	h := s.Handler()
	ms.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms.mu.Lock()
		failFrom, lie := ms.failEntriesFrom, ms.lieVRF
		ms.mu.Unlock()
		if r.URL.Path == "/v1/log/entries" && failFrom >= 0 {
			if start, _ := strconv.ParseInt(r.URL.Query().Get("start"), 10, 64); start >= failFrom {
				http.Error(w, "connection lost", http.StatusBadGateway)
				return
			}
		}
		if r.URL.Path == "/v1/log/vrf" && lie {
			// Answer with the index and proof of another name.
			r2 := r.Clone(r.Context())
			r2.Body = http.NoBody
			rec := httptest.NewRecorder()
			body := `{"name":"b.acme"}`
			r2.Body = readCloser{strings.NewReader(body)}
			r2.ContentLength = int64(len(body))
			h.ServeHTTP(rec, r2)
			out := strings.Replace(rec.Body.String(), `"name":"b.acme"`, `"name":"acme"`, 1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.Code)
			w.Write([]byte(out))
			return
		}
		h.ServeHTTP(w, r)
	}))
	ms.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	ms.srv.StartTLS()
	t.Cleanup(ms.srv.Close)
	return ms
}

type readCloser struct{ *strings.Reader }

func newWitnessVkey(t *testing.T) string {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, "witness.test")
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

func (readCloser) Close() error { return nil }

func TestLogMonitor(t *testing.T) {
	ctx := context.Background()
	ms := newMonitorServer(t)
	f := ms.f
	owner := f.Owner("acme", "acme")
	admin := f.Admin()
	register := func(a registry.Actor, name string) *registry.Issued {
		t.Helper()
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, a, registry.RegisterRequest{Name: name, CSR: csr})
		if err != nil {
			t.Fatalf("Register(%s): %v", name, err)
		}
		return iss
	}
	dir := t.TempDir()
	w := func(name string, data []byte) string { return writeTestFile(t, filepath.Join(dir, name), data, 0o600) }
	tlsBundle := w("tls.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ms.srv.Certificate().Raw}))
	logKey := w("log-key.pem", pemPublicKey(t, f.LogKey.Public()))
	vrfKey := w("vrf-key.pem", pemPublicKey(t, f.VRFKey.Public()))
	apiKey := w("acme.apikey", []byte(f.NewAPIKey("acme", "acme", registry.ScopeAgentsRead)+"\n"))
	state := filepath.Join(dir, "acme.monitor.json")
	knownDir := filepath.Join(dir, "known")
	if err := os.Mkdir(knownDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The owner's record of what it requested: fingerprints in known.txt
	// (in upper case with colons, as some tools print them), PEMs in known/.
	var known []string
	addKnown := func(iss *registry.Issued) {
		fp := iss.Certificate.FingerprintSHA256
		known = append(known, fp)
		var lines []string
		for _, k := range known {
			var pairs []string
			for i := 0; i < len(k); i += 2 {
				pairs = append(pairs, strings.ToUpper(k[i:i+2]))
			}
			lines = append(lines, strings.Join(pairs, ":"))
		}
		w("known.txt", []byte("# what acme requested\n"+strings.Join(lines, "\n")+"\n"))
		writeTestFile(t, filepath.Join(knownDir, fp[:16]+".pem"), []byte(iss.CertificatePEM), 0o644)
	}

	// The owner registers a.acme; an admin registers b.acme without telling
	// the owner; another namespace registers c.other.
	addKnown(register(owner, "a.acme"))
	rogue1 := register(admin, "b.acme").Certificate.FingerprintSHA256
	other := register(f.Owner("other", "other"), "c.other").Certificate.FingerprintSHA256
	addKnown(register(owner, "x.team.acme"))

	base := []string{"log", "monitor", "--server", ms.srv.URL, "--ca-bundle", tlsBundle, "--log-key", logKey, "--vrf-key", vrfKey,
		"--trust-domain", registrytest.TrustDomain, "--state", state}
	run := func(t *testing.T, wantCode int, args ...string) string {
		t.Helper()
		a, out, errb := testApp(nil)
		code := runAtr(a, append(append([]string{}, base...), args...))
		if code != wantCode {
			t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, out, errb)
		}
		return out.String() + errb.String()
	}
	expectFound := func(t *testing.T, out string, want, notWant []string) {
		t.Helper()
		for _, fp := range want {
			if !strings.Contains(out, "UNKNOWN CERTIFICATE") || !strings.Contains(out, "fingerprint "+fp) {
				t.Errorf("output does not report %s:\n%s", fp, out)
			}
		}
		for _, fp := range notWant {
			if strings.Contains(out, fp) {
				t.Errorf("output reports %s:\n%s", fp, out)
			}
		}
	}
	readState := func(t *testing.T) []byte {
		t.Helper()
		b, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("first run finds the certificate the owner did not request", func(t *testing.T) {
		out := run(t, 1, "--api-key-file", apiKey, "--watch", "acme", "--known", filepath.Join(dir, "known.txt"))
		expectFound(t, out, []string{rogue1}, append([]string{other}, known...))
		if !strings.Contains(out, "scanned leaves 0 to ") {
			t.Errorf("output: %s", out)
		}
		if st, err := os.Stat(state); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("state file: %v %v", st, err)
		}
	})
	t.Run("nothing new: exit 0, no API key needed", func(t *testing.T) {
		out := run(t, 0, "--watch", "acme", "--known", filepath.Join(dir, "known.txt"))
		if !strings.Contains(out, "no unknown certificate") || !strings.Contains(out, "(0);") {
			t.Errorf("output: %s", out)
		}
	})

	// More issuance: the owner's (known) and an admin's (not).
	csr, _ := f.NewCSR()
	rot, err := f.Registry.Rotate(ctx, owner, "a.acme", csr)
	if err != nil {
		t.Fatal(err)
	}
	addKnown(rot)
	addKnown(register(owner, "d.acme"))
	rogue2 := register(admin, "e.team.acme").Certificate.FingerprintSHA256
	register(f.Owner("other", "other"), "f.other")

	t.Run("killed mid-scan: the state is unchanged", func(t *testing.T) {
		before := readState(t)
		ms.set(func(m *monitorServer) { m.failEntriesFrom = 0 })
		defer ms.set(func(m *monitorServer) { m.failEntriesFrom = -1 })
		run(t, 1, "--watch", "acme", "--known", filepath.Join(dir, "known.txt"))
		if !bytes.Equal(readState(t), before) {
			t.Error("an interrupted scan changed the state file")
		}
		if left := tempFiles(t, dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("the next run finds only the new certificates", func(t *testing.T) {
		out := run(t, 1, "--watch", "acme", "--known", filepath.Join(dir, "known.txt"))
		expectFound(t, out, []string{rogue2}, append([]string{rogue1, other}, known...))
	})
	t.Run("known certificates as a directory of PEMs, from scratch", func(t *testing.T) {
		out := run(t, 1, "--state", filepath.Join(dir, "scratch.json"), "--api-key-file", apiKey, "--watch", "acme", "--known", knownDir)
		expectFound(t, out, []string{rogue1, rogue2}, append([]string{other}, known...))
	})
	t.Run("a newly watched name is scanned from the first leaf", func(t *testing.T) {
		out := run(t, 1, "--api-key-file", apiKey, "--watch", "acme", "--watch", "b.acme", "--known", filepath.Join(dir, "known.txt"))
		expectFound(t, out, []string{rogue1, rogue2}, []string{other})
		if !strings.Contains(out, "scanned leaves 0 to ") {
			t.Errorf("output: %s", out)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		fresh := filepath.Join(dir, "fresh.json")
		for _, tt := range []struct {
			name  string
			setup func(m *monitorServer)
			args  []string
			want  string
		}{
			{"the server lies about a name's index", func(m *monitorServer) { m.lieVRF = true },
				[]string{"--state", fresh, "--api-key-file", apiKey, "--watch", "acme"}, "watched name acme: translog: vrf: proof does not verify"},
			{"an uncosigned checkpoint under a 1-of-1 witness policy", nil,
				[]string{"--state", fresh, "--api-key-file", apiKey, "--watch", "acme", "--witness", newWitnessVkey(t)}, "witness"},
			{"a name outside the key's namespace", nil,
				[]string{"--state", fresh, "--api-key-file", apiKey, "--watch", "other"}, "the server refused"},
			{"a new name without an API key", nil,
				[]string{"--watch", "zzz.acme"}, "API key"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if tt.setup != nil {
					ms.set(tt.setup)
					defer ms.set(func(m *monitorServer) { m.lieVRF = false })
				}
				a, out, errb := testApp(nil)
				code := runAtr(a, append(append([]string{}, base...), tt.args...))
				if code == 0 || !strings.Contains(out.String()+errb.String(), tt.want) {
					t.Errorf("exit %d, want non-zero with %q\nstdout: %s\nstderr: %s", code, tt.want, out, errb)
				}
				if _, err := os.Stat(fresh); err == nil {
					t.Errorf("a refused run wrote its state")
				}
			})
		}
	})
}
