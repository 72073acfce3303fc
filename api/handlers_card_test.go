package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

var _ AgentCards = (*registry.Registry)(nil)

// cardCase is a card the A2A SDK is asked to verify.
type cardCase struct {
	desc   string
	card   []byte
	wantOK bool
}

// a2aSDK returns node and the directory of scripts/install-a2a-sdk.sh's
// install of @a2a-js/sdk. Missing either is a skip locally and a failure
// in CI.
func a2aSDK(t *testing.T) (node, dir string) {
	t.Helper()
	dir = os.Getenv("ATR_A2A_SDK_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "atr", "a2a-sdk")
	}
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "@a2a-js", "sdk", "package.json"))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node and @a2a-js/sdk are required in CI (run scripts/install-a2a-sdk.sh; ATR_A2A_SDK_DIR=%s): %v", dir, err)
		}
		t.Skipf("node or @a2a-js/sdk missing (run scripts/install-a2a-sdk.sh): %v", err)
	}
	return node, dir
}

// postCard posts a card to /v1/agents/{name}/card with an API key (or,
// with key "", the TLS client certificate of hc).
func (rs *realServer) postCard(t *testing.T, hc *http.Client, key, name, contentType string, card []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, rs.srv.URL+"/v1/agents/"+name+"/card", bytes.NewReader(card))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestA2ASDKVerifiesSignedCard signs a card through the real registry (the
// card key on SoftHSM2) over HTTPS, and has @a2a-js/sdk's own verifier
// (verifyAgentCardSignature, key from ATR's JWKS by kid) check it: the card
// verifies; altering any top-level member, the signature or the protected
// header breaks it.
func TestA2ASDKVerifiesSignedCard(t *testing.T) {
	node, sdkDir := a2aSDK(t)
	rs := newRealServer(t, "sqlite")
	f := rs.f
	ctx := context.Background()
	const prefix = "https://agents.acme.example/a2a/billing"
	card, err := os.ReadFile("../ca/testdata/agentcard/card.json")
	if err != nil {
		t.Fatal(err)
	}
	csr, agentKey := f.NewCSR()
	owner := f.Owner("acme", "acme")
	iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "billing-bot.acme", CSR: csr,
		Metadata: map[string]string{registry.MetadataA2AURL: prefix}})
	if err != nil {
		t.Fatal(err)
	}
	key := f.NewAPIKey("acme", "acme", registry.ScopeAgentsWrite)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rs.pool}}}

	status, signed := rs.postCard(t, hc, key, "billing-bot.acme", "application/json", card)
	if status != http.StatusOK {
		t.Fatalf("POST card: %d %s", status, signed)
	}
	// The agent itself, over mTLS, gets the same card signed.
	agentHC := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rs.pool,
		Certificates: []tls.Certificate{tlsIdentity(t, iss.CertificatePEM, iss.ChainPEM, agentKey)}}}}
	if status, b := rs.postCard(t, agentHC, "", "billing-bot.acme", "application/json", card); status != http.StatusOK {
		t.Errorf("POST card as the agent itself: %d %s", status, b)
	}

	// The HTTP refusals.
	for _, tt := range []struct {
		desc, contentType string
		card              []byte
		status            int
		msg               string
	}{
		{"interface outside a2a_url", "application/json", bytes.Replace(card, []byte("/a2a/billing/grpc"), []byte("/a2a/other"), 1),
			http.StatusBadRequest, "not under the registered URL prefix"},
		{"name mismatch", "application/json", bytes.Replace(card, []byte(`"billing-bot.acme"`), []byte(`"Billing Bot"`), 1),
			http.StatusBadRequest, "name is not the agent's name"},
		{"not a card", "application/json", []byte(`{"name":"billing-bot.acme","url":"https://agents.acme.example/a2a/billing"}`),
			http.StatusBadRequest, "not in AgentCard"},
		{"content type", "text/plain", card, http.StatusUnsupportedMediaType, ""},
		{"too large", "application/json", append(card[:len(card)-2], []byte(`,"description":"`+strings.Repeat("x", ca.MaxAgentCardSize)+`"}`)...),
			http.StatusRequestEntityTooLarge, ""},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			status, b := rs.postCard(t, hc, key, "billing-bot.acme", tt.contentType, tt.card)
			if status != tt.status || !strings.Contains(string(b), tt.msg) {
				t.Errorf("POST card: %d %s; want %d with %q", status, b, tt.status, tt.msg)
			}
		})
	}

	// The JWKS, as a relying party fetches it.
	resp, err := hc.Get(rs.srv.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET jwks: %d %v", resp.StatusCode, err)
	}

	// The Go verifier agrees first.
	kid, err := ca.JWKThumbprint(f.CardKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	keys := func(k string) (crypto.PublicKey, error) {
		if k != kid {
			return nil, errors.New("unknown kid")
		}
		return f.CardKey.Public(), nil
	}
	parsed, _, err := ca.VerifyAgentCard(signed, keys)
	if err != nil {
		t.Fatalf("ca.VerifyAgentCard(signed card) = %v", err)
	}
	canonical, _ := parsed.Canonical()

	cases := []cardCase{{"the signed card", signed, true}}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(signed, &m); err != nil {
		t.Fatal(err)
	}
	var members []string
	for k := range m {
		if k != "signatures" {
			members = append(members, k)
		}
	}
	sort.Strings(members)
	for _, k := range members {
		cases = append(cases, cardCase{"altered " + k, withMember(t, m, k, alterJSON(t, m[k])), false})
	}
	var sigs []map[string]any
	if err := json.Unmarshal(m["signatures"], &sigs); err != nil || len(sigs) != 1 {
		t.Fatalf("signatures %s: %v", m["signatures"], err)
	}
	if idx, ok := sigs[0]["header"].(map[string]any)[registry.CardLogIndexHeader].(float64); !ok || idx < 0 {
		t.Errorf("unprotected header %v has no log index", sigs[0]["header"])
	}
	sigCase := func(desc, field, value string) {
		s := map[string]any{}
		for k, v := range sigs[0] {
			s[k] = v
		}
		s[field] = value
		b, _ := json.Marshal([]any{s})
		cases = append(cases, cardCase{desc, withMember(t, m, "signatures", string(b)), false})
	}
	sigBytes, _ := base64.RawURLEncoding.DecodeString(sigs[0]["signature"].(string))
	sigBytes[10] ^= 1
	sigCase("signature bit flipped", "signature", base64.RawURLEncoding.EncodeToString(sigBytes))
	hdr, _ := base64.RawURLEncoding.DecodeString(sigs[0]["protected"].(string))
	sigCase("protected header typ changed", "protected", base64.RawURLEncoding.EncodeToString(bytes.Replace(hdr, []byte(`"JOSE"`), []byte(`"JWT"`), 1)))
	sigCase("protected header re-encoded", "protected", base64.RawURLEncoding.EncodeToString(append(hdr, ' ')))
	sigCase("unknown kid", "protected", base64.RawURLEncoding.EncodeToString(bytes.Replace(hdr, []byte(kid), []byte(strings.Repeat("A", len(kid))), 1)))
	cases = append(cases, cardCase{"no signatures", withMember(t, m, "signatures", ""), false})
	// The SDK's limit: it drops members outside the v1.0 schema before
	// verifying, so an added one (here A2A v0.3's top-level url) goes
	// unnoticed by it. ATR never signs such a card, and ca.VerifyAgentCard
	// refuses it.
	added := withMember(t, m, "url", `"https://evil.example/a2a"`)
	cases = append(cases, cardCase{"added member outside the v1.0 schema (not covered: the SDK ignores it)", added, true})
	if _, _, err := ca.VerifyAgentCard(added, keys); err == nil {
		t.Error("ca.VerifyAgentCard accepted a card with a member outside the v1.0 schema")
	}

	results := runSDKVerifier(t, node, sdkDir, jwks, cases)
	if results[0].Canonical != string(canonical) {
		t.Errorf("the SDK's canonical form differs from ATR's:\nsdk %s\natr %s", results[0].Canonical, canonical)
	}
	for i, c := range cases {
		t.Logf("%s: @a2a-js/sdk ok=%v %s", c.desc, results[i].OK, results[i].Error)
		if results[i].OK != c.wantOK {
			t.Errorf("%s: @a2a-js/sdk verified=%v (%s), want %v", c.desc, results[i].OK, results[i].Error, c.wantOK)
		}
	}
}

// TestSignCardDisabled: a registry without a card key answers 503 with a
// message that says so.
func TestSignCardDisabled(t *testing.T) {
	f := registrytest.NewFixture(t, registrytest.WithDatabase("sqlite"))
	cfg := f.Config
	cfg.CardSigner = nil
	reg, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{TrustDomain: registrytest.TrustDomain, TLS: true}, Deps{Lifecycle: reg, Auth: reg, Admin: reg, Now: f.Clock.Now}, testLogger(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	rs := &realServer{f: f, srv: srv, pool: pool}
	csr, _ := f.NewCSR()
	if _, err := reg.Register(context.Background(), f.Owner("acme", "acme"), registry.RegisterRequest{Name: "bot.acme", CSR: csr,
		Metadata: map[string]string{registry.MetadataA2AURL: "https://a.example"}}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	status, b := rs.postCard(t, hc, f.NewAPIKey("acme", "acme", registry.ScopeAgentsWrite), "bot.acme", "application/json",
		[]byte(`{"name":"bot.acme","supportedInterfaces":[{"url":"https://a.example/x"}]}`))
	if status != http.StatusServiceUnavailable || !strings.Contains(string(b), "no card key") {
		t.Errorf("POST card without a card key: %d %s; want 503 naming the missing key", status, b)
	}
}

type sdkResult struct {
	Card      string `json:"card"`
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	Canonical string `json:"canonical"`
}

// runSDKVerifier runs testdata/agentcard/verify-card.mjs over the cases.
func runSDKVerifier(t *testing.T, node, sdkDir string, jwks []byte, cases []cardCase) []sdkResult {
	t.Helper()
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"testdata/agentcard/verify-card.mjs", sdkDir, jwksFile}
	for i, c := range cases {
		p := filepath.Join(dir, fmt.Sprintf("card%03d.json", i))
		if err := os.WriteFile(p, c.card, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	cmd := exec.Command(node, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify-card.mjs: %v\n%s", err, stderr.String())
	}
	var res []sdkResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r sdkResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("verify-card.mjs output %q: %v", sc.Text(), err)
		}
		res = append(res, r)
	}
	if len(res) != len(cases) {
		t.Fatalf("verify-card.mjs answered %d of %d cards:\n%s\n%s", len(res), len(cases), out, stderr.String())
	}
	return res
}

// withMember is the card m with member k set to the JSON value v (deleted
// when v is "").
func withMember(t *testing.T, m map[string]json.RawMessage, k, v string) []byte {
	t.Helper()
	out := make(map[string]json.RawMessage, len(m))
	for kk, vv := range m {
		out[kk] = vv
	}
	if v == "" {
		delete(out, k)
	} else {
		out[k] = json.RawMessage(v)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// alterJSON changes a JSON value, keeping its type, in a way the A2A
// schema keeps (so the SDK's canonical form changes).
func alterJSON(t *testing.T, v json.RawMessage) string {
	t.Helper()
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		t.Fatal(err)
	}
	var out any
	switch x := x.(type) {
	case string:
		out = x + "x"
	case []any:
		out = append(x, x[0])
	case map[string]any:
		for k := range x {
			delete(x, k)
			break
		}
		if len(x) == 0 {
			x["description"] = "x"
		}
		out = x
	default:
		t.Fatalf("no alteration for %s", v)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// tlsIdentity is the TLS client identity of an agent: its certificate,
// the chain and its key.
func tlsIdentity(t *testing.T, certPEM, chainPEM string, key crypto.Signer) tls.Certificate {
	t.Helper()
	var chain [][]byte
	rest := []byte(certPEM + chainPEM)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		chain = append(chain, b.Bytes)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key}
}
