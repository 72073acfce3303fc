package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// memHashes is an in-memory translog.HashStore.
type memHashes struct{ h []tlog.Hash }

func (m *memHashes) ReadHashes(_ context.Context, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= int64(len(m.h)) {
			return nil, fmt.Errorf("missing hash %d", x)
		}
		out[i] = m.h[x]
	}
	return out, nil
}

func (m *memHashes) WriteHashes(_ context.Context, start int64, hs []tlog.Hash) error {
	if start != int64(len(m.h)) {
		return fmt.Errorf("write at %d, have %d", start, len(m.h))
	}
	m.h = append(m.h, hs...)
	return nil
}

// fakeLog is a transparency log built with translog, signed with a software
// P-256 key, served like the registry serves it.
type fakeLog struct {
	t       *testing.T
	origin  string
	signer  note.Signer
	entries [][]byte
	hashes  *memHashes

	mu sync.Mutex
	// served is the tree size the checkpoint advertises (default: all).
	served int64
	// checkpoint, when set, is served instead of a freshly signed one.
	checkpoint []byte
	// tamper maps entry indexes to the bytes served instead.
	tamper map[int64][]byte
}

func newFakeLog(t *testing.T, origin string, key *ecdsa.PrivateKey) *fakeLog {
	t.Helper()
	s, err := translog.NewNoteSigner(origin, key)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeLog{t: t, origin: origin, signer: s, hashes: &memHashes{}, served: -1, tamper: map[int64][]byte{}}
}

// testEntry makes a canonical version 2 register entry; cert may be nil.
func testEntry(t *testing.T, i int, cert *x509.Certificate) []byte {
	t.Helper()
	e := translog.Entry{Type: translog.EventRegister, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Fingerprint: fmt.Sprintf("%064x", i+1), IssuerKeyID: "abcd",
		NameIndexes: []string{fmt.Sprintf("%064x", 1000+i), fmt.Sprintf("%064x", 999)}}
	if cert != nil {
		e.Fingerprint = ca.Fingerprint(cert)
	}
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// testEntryV1 makes a canonical version 1 register entry (names in clear,
// the format before the upgrade); cert may be nil.
func testEntryV1(t *testing.T, i int, cert *x509.Certificate) []byte {
	t.Helper()
	e := translog.Entry{Version: translog.EntryVersion1, Type: translog.EventRegister, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Agent: fmt.Sprintf("bot-%d.acme", i), Serial: fmt.Sprintf("%x", 0x1000+i), Fingerprint: fmt.Sprintf("%064x", i+1), Actor: "key:test"}
	if cert != nil {
		e.Agent, e.Serial, e.Fingerprint = "bot.acme", cert.SerialNumber.Text(16), ca.Fingerprint(cert)
	}
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (l *fakeLog) append(data ...[]byte) {
	l.t.Helper()
	for _, d := range data {
		if err := translog.Append(context.Background(), l.hashes, int64(len(l.entries)), d); err != nil {
			l.t.Fatal(err)
		}
		l.entries = append(l.entries, d)
	}
}

func (l *fakeLog) size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.served >= 0 {
		return l.served
	}
	return int64(len(l.entries))
}

func (l *fakeLog) signed(size int64) []byte {
	l.t.Helper()
	root, err := translog.RootHash(context.Background(), l.hashes, size)
	if err != nil {
		l.t.Fatal(err)
	}
	msg, err := translog.SignCheckpoint(translog.Checkpoint{Origin: l.origin, Size: size, Hash: root}, l.signer)
	if err != nil {
		l.t.Fatal(err)
	}
	return msg
}

func (l *fakeLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	num := func(k string) int64 { n, _ := strconv.ParseInt(q.Get(k), 10, 64); return n }
	js := func(v any) { w.Header().Set("Content-Type", "application/json"); json.NewEncoder(w).Encode(v) }
	size := l.size()
	switch r.URL.Path {
	case "/v1/log/checkpoint":
		l.mu.Lock()
		cp := l.checkpoint
		l.mu.Unlock()
		if cp == nil {
			cp = l.signed(size)
		}
		w.Write(cp)
	case "/v1/log/entries":
		start, end := num("start"), min(num("end"), size, num("start")+3) // small pages
		var out [][]byte
		for i := start; i < end; i++ {
			d := l.entries[i]
			l.mu.Lock()
			if td, ok := l.tamper[i]; ok {
				d = td
			}
			l.mu.Unlock()
			out = append(out, d)
		}
		js(client.LogEntries{Start: start, Entries: out})
	case "/v1/log/proof/inclusion":
		p, err := translog.InclusionProof(ctx, l.hashes, num("index"), num("size"))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		js(client.InclusionProof{Index: num("index"), Size: num("size"), Proof: rawHashes(p)})
	case "/v1/log/proof/consistency":
		p, err := translog.ConsistencyProof(ctx, l.hashes, num("old"), num("new"))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		js(client.ConsistencyProof{Old: num("old"), New: num("new"), Proof: rawHashes(p)})
	default:
		http.NotFound(w, r)
	}
}

func rawHashes(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = append([]byte(nil), h[:]...)
	}
	return out
}

func pubPEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestLogVerify(t *testing.T) {
	const origin = "test.local/log"
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dir := t.TempDir()
	keyFile := writeTestFile(t, filepath.Join(dir, "log-key.pem"), pubPEM(t, key), 0o644)
	otherKeyFile := writeTestFile(t, filepath.Join(dir, "other-key.pem"), pubPEM(t, otherKey), 0o644)
	vkey, err := translog.VerifierKey(origin, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	// As GET /v1/log/vkey serves it: the ECDSA key, then the Ed25519 key.
	_, edVKey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	vkeyFile := writeTestFile(t, filepath.Join(dir, "log.vkey"), []byte(vkey+"\n"+edVKey+"\n"), 0o644)

	c := newTestCA(t, "test.local")
	agentKey, _ := generateAgentKey("p256")
	leaf := c.Issue(t, agentKey, "bot.acme")
	certFile := writeTestFile(t, filepath.Join(dir, "agent.pem"), pemOrNil([]*x509.Certificate{leaf}), 0o644)
	strangerKey, _ := generateAgentKey("p256")
	stranger := writeTestFile(t, filepath.Join(dir, "stranger.pem"), pemOrNil([]*x509.Certificate{c.Issue(t, strangerKey, "bot.acme")}), 0o644)

	// Entries 0-3 are version 1 (before the upgrade), 4-8 version 2.
	l := newFakeLog(t, origin, key)
	for i := range 4 {
		l.append(testEntryV1(t, i, nil))
	}
	l.append(testEntry(t, 4, leaf))
	for i := 5; i < 9; i++ {
		l.append(testEntry(t, i, nil))
	}
	srv := httptest.NewServer(l)
	defer srv.Close()

	run := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		a, out, errb := testApp(nil)
		code := runAtr(a, append([]string{"log", "verify", "--server", srv.URL}, args...))
		return code, out.String(), errb.String()
	}
	expect := func(t *testing.T, wantCode int, want string, args ...string) {
		t.Helper()
		code, out, errb := run(t, args...)
		if code != wantCode {
			t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, out, errb)
		}
		if !strings.Contains(out+errb, want) {
			t.Errorf("output lacks %q\nstdout: %s\nstderr: %s", want, out, errb)
		}
	}
	setServed := func(n int64) { l.mu.Lock(); l.served = n; l.mu.Unlock() }
	setCheckpoint := func(cp []byte) { l.mu.Lock(); l.checkpoint = cp; l.mu.Unlock() }

	state := filepath.Join(dir, "state")
	t.Run("good: first run creates the state file", func(t *testing.T) {
		setServed(3)
		defer setServed(-1)
		expect(t, 0, "first checkpoint seen", "--log-key", keyFile, "--state", state)
		got, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, l.signed(3)) && !strings.HasPrefix(string(got), origin+"\n3\n") {
			t.Errorf("state file holds %q", got)
		}
	})
	t.Run("good: grown tree is consistent, certificate included, full recompute", func(t *testing.T) {
		expect(t, 0, "issuance included at index 4", "--log-key", keyFile, "--state", state, "--cert", certFile, "--full")
		got, _ := os.ReadFile(state)
		if !strings.HasPrefix(string(got), origin+"\n9\n") {
			t.Errorf("state not advanced to 9: %q", got)
		}
		if left := tempFiles(t, dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("good: same checkpoint again, vkey form, cert without --full", func(t *testing.T) {
		expect(t, 0, "consistent with the checkpoint seen before (size 9)", "--log-key", vkeyFile, "--state", state, "--cert", certFile)
	})
	t.Run("good: environment twins", func(t *testing.T) {
		a, out, errb := testApp(map[string]string{"ATR_SERVER": srv.URL, "ATR_LOG_KEY_FILE": keyFile, "ATR_LOG_STATE": state})
		if code := runAtr(a, []string{"log", "verify"}); code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errb)
		}
	})

	stateBefore, _ := os.ReadFile(state)
	keepState := func(t *testing.T) {
		t.Helper()
		if got, _ := os.ReadFile(state); !bytes.Equal(got, stateBefore) {
			t.Errorf("a failed check changed the state file:\n%s", got)
		}
	}
	t.Run("tampered signature", func(t *testing.T) {
		cp := l.signed(9)
		i := bytes.LastIndex(cp, []byte(" ")) + 10
		cp = append([]byte(nil), cp...)
		cp[i] ^= 'A' ^ 'B'
		setCheckpoint(cp)
		defer setCheckpoint(nil)
		expect(t, 1, "does not verify with the pinned log key", "--log-key", keyFile, "--state", state)
		keepState(t)
	})
	t.Run("tampered checkpoint text", func(t *testing.T) {
		cp := bytes.Replace(l.signed(9), []byte("\n9\n"), []byte("\n8\n"), 1)
		setCheckpoint(cp)
		defer setCheckpoint(nil)
		expect(t, 1, "does not verify", "--log-key", keyFile, "--state", state)
		keepState(t)
	})
	t.Run("signed by another key", func(t *testing.T) {
		expect(t, 1, "does not verify with the pinned log key", "--log-key", otherKeyFile)
	})
	t.Run("wrong origin pinned", func(t *testing.T) {
		expect(t, 1, "does not verify", "--log-key", keyFile, "--origin", "evil.local/log")
	})
	t.Run("rollback", func(t *testing.T) {
		setServed(5)
		defer setServed(-1)
		expect(t, 1, "rollback", "--log-key", keyFile, "--state", state)
		keepState(t)
	})
	t.Run("inconsistent tree (fork with the same prefix size)", func(t *testing.T) {
		// A second log with a different entry 1, signed by the same key.
		fork := newFakeLog(t, origin, key)
		for i := range 12 {
			if i == 1 {
				fork.append(testEntry(t, 100, nil))
				continue
			}
			fork.append(testEntry(t, i, nil))
		}
		fsrv := httptest.NewServer(fork)
		defer fsrv.Close()
		a, out, errb := testApp(nil)
		code := runAtr(a, []string{"log", "verify", "--server", fsrv.URL, "--log-key", keyFile, "--state", state})
		if code != 1 || !strings.Contains(errb.String(), "does not extend") {
			t.Fatalf("exit %d, want 1 with a consistency failure\nstdout: %s\nstderr: %s", code, out, errb)
		}
		keepState(t)

		fork.mu.Lock()
		fork.served = 9
		fork.mu.Unlock()
		a, out, errb = testApp(nil)
		code = runAtr(a, []string{"log", "verify", "--server", fsrv.URL, "--log-key", keyFile, "--state", state})
		if code != 1 || !strings.Contains(errb.String(), "fork") {
			t.Fatalf("same size, other root: exit %d, want 1 with a fork\nstdout: %s\nstderr: %s", code, out, errb)
		}
		keepState(t)
	})
	t.Run("tampered entry row", func(t *testing.T) {
		bad := bytes.Replace(l.entries[4], []byte(`"issuer_key_id":"abcd"`), []byte(`"issuer_key_id":"abce"`), 1)
		if bytes.Equal(bad, l.entries[4]) {
			t.Fatal("entry 4 not altered")
		}
		l.mu.Lock()
		l.tamper[4] = bad
		l.mu.Unlock()
		defer func() { l.mu.Lock(); delete(l.tamper, 4); l.mu.Unlock() }()
		expect(t, 1, "not included", "--log-key", keyFile, "--cert", certFile)
		expect(t, 1, "hash to root", "--log-key", keyFile, "--full")
	})
	t.Run("non-canonical entry", func(t *testing.T) {
		l.mu.Lock()
		l.tamper[2] = append([]byte(" "), l.entries[2]...)
		l.mu.Unlock()
		defer func() { l.mu.Lock(); delete(l.tamper, 2); l.mu.Unlock() }()
		expect(t, 1, "not a canonical log entry", "--log-key", keyFile, "--full")
	})
	t.Run("entry versions", func(t *testing.T) {
		for _, tt := range []struct {
			name     string
			versions string // one digit per entry
			args     []string
			wantCode int
			want     string
		}{
			{"v1 only (a log not yet upgraded)", "1111", []string{"--full"}, 0, "all 4 entries canonical"},
			{"v1 then v2", "11222", []string{"--full"}, 0, "all 5 entries canonical"},
			{"v2 only", "222", []string{"--full"}, 0, "all 3 entries canonical"},
			{"v1 after v2", "12212", []string{"--full"}, 1, "entry 3 is a version 1 entry after the first version 2 entry (1)"},
			{"v1 after v2, found while looking for --cert", "1212c", []string{"--cert", certFile}, 1, "entry 2 is a version 1 entry"},
			{"v1 certificate entry before v2", "1C22", []string{"--cert", certFile, "--full"}, 0, "issuance included at index 1"},
			{"v2 certificate entry after v1", "112c2", []string{"--cert", certFile}, 0, "issuance included at index 3"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				vl := newFakeLog(t, origin, key)
				for i, c := range tt.versions {
					switch c {
					case '1':
						vl.append(testEntryV1(t, i, nil))
					case '2':
						vl.append(testEntry(t, i, nil))
					case 'C':
						vl.append(testEntryV1(t, i, leaf))
					case 'c':
						vl.append(testEntry(t, i, leaf))
					}
				}
				vsrv := httptest.NewServer(vl)
				defer vsrv.Close()
				a, out, errb := testApp(nil)
				code := runAtr(a, append([]string{"log", "verify", "--server", vsrv.URL, "--log-key", keyFile}, tt.args...))
				if code != tt.wantCode || !strings.Contains(out.String()+errb.String(), tt.want) {
					t.Errorf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tt.wantCode, tt.want, out, errb)
				}
			})
		}
	})
	t.Run("server certificate (server_cert entry)", func(t *testing.T) {
		serverKey, _ := generateAgentKey("p256")
		serverCert := c.Issue(t, serverKey, "registry")
		serverFile := writeTestFile(t, filepath.Join(dir, "server.pem"), pemOrNil([]*x509.Certificate{serverCert}), 0o644)
		e := translog.Entry{Type: translog.EventServerCert, Time: time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC),
			Fingerprint: ca.Fingerprint(serverCert), IssuerKeyID: "abcd", Certificate: serverCert.Raw}
		data, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		sl := newFakeLog(t, origin, key)
		sl.append(testEntry(t, 0, nil), data, testEntry(t, 2, nil))
		ssrv := httptest.NewServer(sl)
		defer ssrv.Close()
		for _, args := range [][]string{{"--cert", serverFile}, {"--cert", serverFile, "--full"}} {
			a, out, errb := testApp(nil)
			code := runAtr(a, append([]string{"log", "verify", "--server", ssrv.URL, "--log-key", keyFile}, args...))
			if code != 0 || !strings.Contains(out.String(), "issuance included at index 1") {
				t.Errorf("%q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errb)
			}
		}
	})
	t.Run("certificate not in the log", func(t *testing.T) {
		expect(t, 1, "no issuance entry", "--log-key", keyFile, "--cert", stranger)
	})
	t.Run("state file not signed by the pinned key", func(t *testing.T) {
		forged := filepath.Join(dir, "forged-state")
		ol := newFakeLog(t, origin, otherKey)
		ol.append(testEntry(t, 0, nil))
		writeTestFile(t, forged, ol.signed(1), 0o644)
		expect(t, 1, "state file", "--log-key", keyFile, "--state", forged)
	})
	t.Run("usage", func(t *testing.T) {
		if code, _, _ := run(t); code != 2 {
			t.Errorf("without --log-key: exit %d, want 2", code)
		}
	})
}
