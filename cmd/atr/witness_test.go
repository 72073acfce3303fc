package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

func TestConfigWitnesses(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "w.example/witness")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr string // "" = valid
	}{
		{"no witnesses", func(c *Config) {}, ""},
		{"one witness", func(c *Config) { c.Witnesses = []string{"w1=https://w.example/prefix=" + vkey} }, ""},
		{"two witnesses", func(c *Config) {
			c.Witnesses = []string{"w1=https://w.example=" + vkey, "w2=http://127.0.0.1:7380=" + vkey}
		}, ""},
		{"same name twice", func(c *Config) {
			c.Witnesses = []string{"w1=https://w.example=" + vkey, "w1=https://v.example=" + vkey}
		}, "twice"},
		{"no vkey", func(c *Config) { c.Witnesses = []string{"w1=https://w.example"} }, "name=URL=vkey"},
		{"bad vkey", func(c *Config) { c.Witnesses = []string{"w1=https://w.example=nope"} }, "verifier key"},
		{"URL with query", func(c *Config) { c.Witnesses = []string{"w1=https://w.example/?a=" + vkey} }, "URL"},
		{"not http", func(c *Config) { c.Witnesses = []string{"w1=ftp://w.example=" + vkey} }, "URL"},
		{"timeout", func(c *Config) { c.WitnessTimeout = 30 * time.Second }, ""},
		{"timeout too short", func(c *Config) { c.WitnessTimeout = 10 * time.Millisecond }, "witness timeout"},
		{"timeout too long", func(c *Config) { c.WitnessTimeout = time.Hour }, "witness timeout"},
		{"Ed25519 key slot-id", func(c *Config) { c.LogKeyEd25519 = "pkcs11:slot-id=0;object=atr-log-ed25519" }, "Ed25519"},
		{"Ed25519 key derived", func(c *Config) {
			if c.LogKeyEd25519 != "pkcs11:token="+c.PKCS11Token+";object=atr-log-ed25519" {
				c.LogKeyEd25519 = "wrong derived default " + c.LogKeyEd25519
			}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Complete()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// cosigningWitness is a minimal tlog-witness for the wiring test: it
// cosigns every checkpoint it is sent (the protocol itself, proofs and
// 409s, is tested against litewitness in registry/witness).
type cosigningWitness struct {
	signer note.Signer
	mu     sync.Mutex
	calls  int
}

func (w *cosigningWitness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/add-checkpoint" {
		http.NotFound(rw, r)
		return
	}
	w.mu.Lock()
	w.calls++
	w.mu.Unlock()
	b, _ := io.ReadAll(r.Body)
	_, cp, _ := strings.Cut(string(b), "\n\n")
	text, _, _ := strings.Cut(cp, "\n\n")
	signed, err := note.Sign(&note.Note{Text: text + "\n"}, w.signer)
	if err != nil {
		http.Error(rw, err.Error(), 500)
		return
	}
	_, lines, _ := strings.Cut(string(signed), "\n\n")
	io.WriteString(rw, lines)
}

// TestLogKeyEd25519AndWitnessWiring runs the log-key-ed25519 ceremony and
// `atr serve --witness`: the vkey file matches the served /v1/log/vkey
// second line, checkpoints verify with the Ed25519 key under sumdb/note,
// and the served checkpoint ends up cosigned by the configured witness.
func TestLogKeyEd25519AndWitnessWiring(t *testing.T) {
	d := ceremonies(t)
	if lt := d.transcripts(t, "log-key-ed25519"); len(lt) != 1 {
		t.Fatalf("log-key-ed25519 transcripts: %v", lt)
	} else if tr := d.checkTranscript(t, lt[0], "log-key-ed25519", d.issuing.TokenLabel); len(tr.Keys) != 1 || tr.Keys[0].Algorithm != "ed25519" || tr.Keys[0].Label != defaultLogEd25519Label {
		t.Errorf("transcript keys %+v, want one ed25519 key %q", tr.Keys, defaultLogEd25519Label)
	}
	if code, _, errb := d.atr(t, "ceremony", "log-key-ed25519", "--operator", "tester"); code != 1 || !strings.Contains(errb, "refusing to overwrite") {
		t.Errorf("second log-key-ed25519 ceremony: exit %d, stderr %s", code, errb)
	}
	d.mustAtr(t, "ceremony", "log-key-ed25519", "--operator", "tester", "--if-missing")
	vkeyFile, err := os.ReadFile(filepath.Join(d.dir, "ca", logKeyEd25519VKeyName))
	if err != nil {
		t.Fatal(err)
	}

	skey, wvkey, err := note.GenerateKey(rand.Reader, "witness.atr.test/w")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	wsrv := httptest.NewServer(&cosigningWitness{signer: ws})
	defer wsrv.Close()

	addr, stop := startServe(t, d, "--witness", "w="+wsrv.URL+"="+wvkey)
	defer stop()
	rootPEM, err := os.ReadFile(filepath.Join(d.dir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	vkeys := strings.Split(strings.TrimSuffix(get("/v1/log/vkey"), "\n"), "\n")
	if len(vkeys) != 2 || vkeys[1]+"\n" != string(vkeyFile) {
		t.Fatalf("/v1/log/vkey = %q; want the ECDSA key and then %s's line %q", vkeys, logKeyEd25519VKeyName, vkeyFile)
	}
	edV, err := note.NewVerifier(vkeys[1])
	if err != nil {
		t.Fatalf("sumdb/note cannot read the Ed25519 vkey: %v", err)
	}
	logVs, err := rp.ParseLogVerifiers(vkeys...)
	if err != nil {
		t.Fatal(err)
	}
	policy := rp.WitnessPolicy{Keys: []string{wvkey}, Threshold: 1}
	// The submitter runs in the background every few seconds; the bound
	// is a liveness guard, not a speed goal.
	var cp string
	deadline := time.Now().Add(60 * time.Second)
	for {
		cp = get("/v1/log/checkpoint")
		if _, err := translog.OpenCheckpoint([]byte(cp), edV); err != nil {
			t.Fatalf("served checkpoint does not verify with the Ed25519 key: %v\n%s", err, cp)
		}
		if _, err := rp.VerifyCheckpoint([]byte(cp), logVs, policy); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the served checkpoint was never cosigned by the configured witness:\n%s", cp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := stop(); code != 0 {
		t.Errorf("serve exit %d", code)
	}
}

func TestServeRefusesWitnessesWithoutEd25519Key(t *testing.T) {
	d := newDevTokens(t)
	for _, c := range []string{"root", "intermediate", "log-key", "vrf-key"} {
		d.mustAtr(t, "ceremony", c, "--operator", "tester")
	}
	_, vkey, err := note.GenerateKey(rand.Reader, "w.example/witness")
	if err != nil {
		t.Fatal(err)
	}
	code, _, errb := d.atr(t, "serve", "--listen", "127.0.0.1:0", "--witness", "w=http://127.0.0.1:1="+vkey)
	if code != 1 || !strings.Contains(errb, "log-key-ed25519") {
		t.Errorf("serve with a witness and no Ed25519 log key: exit %d, stderr %s; want 1 and a hint to run the log-key-ed25519 ceremony", code, errb)
	}
}
