package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/registry/registrytest"
	formatsnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// TestLogVerifierKeyInterop replays issue 11 item 9: the log's C2SP verifier key was not
// served anywhere (only a PEM key), so a note verifier or witness could not be configured
// from ATR. GET /v1/log/vkey serves it as text; a third-party verifier that knows C2SP
// signature type 0x02 (transparency-dev/formats/note) verifies a live checkpoint with
// it, and golang.org/x/mod/sumdb/note (Ed25519 only) refuses the key, as docs/api.md says.
func TestLogVerifierKeyInterop(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	if _, err := f.Registry.RecordCACertificates(ctx, append(f.Verifier.Roots(), f.Intermediate)); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{TrustDomain: registrytest.TrustDomain},
		Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, testLogger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(path string) (string, http.Header) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b), resp.Header
	}
	body, hdr := get("/v1/log/vkey")
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	// Two lines: the ECDSA key first, then the Ed25519 key witnesses verify.
	vkeys := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(vkeys) != 2 {
		t.Fatalf("vkey body %q: want two lines (ECDSA, Ed25519)", body)
	}
	vkey := vkeys[0]
	for _, k := range vkeys {
		if strings.Contains(k, " ") || !strings.HasPrefix(k, f.LogOrigin+"+") {
			t.Fatalf("vkey line %q: want one key starting with the origin %q", k, f.LogOrigin)
		}
	}
	cp, _ := get("/v1/log/checkpoint")

	v, err := formatsnote.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("transparency-dev/formats/note cannot read the vkey: %v", err)
	}
	n, err := note.Open([]byte(cp), note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint does not verify with formats/note: %v", err)
	}
	if !strings.HasPrefix(n.Text, f.LogOrigin+"\n") {
		t.Errorf("checkpoint origin line: %q", n.Text)
	}
	if _, err := note.NewVerifier(vkey); err == nil {
		t.Errorf("x/mod/sumdb/note read an ECDSA (0x02) key; update docs/api.md, which says it cannot")
	}
	// The second line is for Ed25519-only verifiers (sumdb/note, witnesses).
	edV, err := note.NewVerifier(vkeys[1])
	if err != nil {
		t.Fatalf("x/mod/sumdb/note cannot read the Ed25519 vkey line: %v", err)
	}
	if _, err := note.Open([]byte(cp), note.VerifierList(edV)); err != nil {
		t.Errorf("checkpoint does not verify with the Ed25519 key and sumdb/note: %v", err)
	}
}
