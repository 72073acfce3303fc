package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestAmbiguousJSONRefused replays issue 11 item 3: a body that two JSON parsers read
// differently (a WAF keeps the first duplicate, encoding/json the last; encoding/json
// matches field names case-insensitively) is refused with 400 before anything runs.
func TestAmbiguousJSONRefused(t *testing.T) {
	h := newHarness(t, nil)
	csr := `"csr":"` + strings.ReplaceAll(testCSR, "\n", `\n`) + `"`
	cert := `"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"`
	tests := []struct {
		name, path, body string
	}{
		{"case-variant name registers another agent", "/v1/agents", `{"name":"a.alice",` + csr + `,"NAME":"b.alice"}`},
		{"duplicate name", "/v1/agents", `{"name":"a.alice",` + csr + `,"name":"b.alice"}`},
		{"field in another case alone", "/v1/agents", `{"Name":"a.alice",` + csr + `}`},
		{"duplicate metadata key", "/v1/agents", `{"name":"a.alice",` + csr + `,"metadata":{"team":"a","team":"b"}}`},
		{"case-variant metadata keys", "/v1/agents", `{"name":"a.alice",` + csr + `,"metadata":{"team":"a","TEAM":"b"}}`},
		{"garbage certificate then a genuine one", "/v1/verify", `{"certificate":"garbage","certificate":` + cert + `}`},
		{"case-variant certificate", "/v1/verify", `{"certificate":"garbage","Certificate":` + cert + `}`},
		{"escaped duplicate", "/v1/verify", `{"certificate":"garbage","certific\u0061te":` + cert + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do("POST", tt.path, keyAlice, tt.body, "Content-Type", "application/json")
			if r.status != 400 {
				t.Fatalf("got %d %s, want 400", r.status, r.body)
			}
			if !strings.Contains(string(r.body), "duplicate or case-variant key") {
				t.Errorf("body %s does not name the problem", r.body)
			}
		})
	}
	if len(h.fake.agents) != 0 {
		t.Errorf("got %d agents registered from ambiguous bodies, want 0", len(h.fake.agents))
	}
	// The unambiguous spelling still works.
	r := h.do("POST", "/v1/agents", keyAlice, `{"name":"a.alice",`+csr+`,"metadata":{"team":"a","Env":"b"}}`, "Content-Type", "application/json")
	if r.status != 201 {
		t.Fatalf("unambiguous body: got %d %s, want 201", r.status, r.body)
	}
}

func TestCheckUnambiguous(t *testing.T) {
	type inner struct {
		A string `json:"a"`
	}
	type target struct {
		X  string            `json:"x"`
		In inner             `json:"in"`
		M  map[string]string `json:"m"`
		L  []inner           `json:"l"`
	}
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"x":"1","in":{"a":"2"},"m":{"k":"v","K2":"w"},"l":[{"a":"1"},{"a":"2"}]}`, true},
		{`{"in":{"a":"1","A":"2"}}`, false},
		{`{"in":{"A":"1"}}`, false},
		{`{"l":[{"a":"1","a":"2"}]}`, false},
		{`{"m":{"k":{"z":1,"z":2}}}`, false},
		{`{"x":"1","X":"1"}`, false},
		{`{"unknown":{"q":1,"Q":2}}`, false},
		{`{"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, false},
	}
	for _, tt := range tests {
		err := checkUnambiguous([]byte(tt.body), &target{})
		if (err == nil) != tt.ok {
			t.Errorf("checkUnambiguous(%s) = %v, want ok=%v", tt.body, err, tt.ok)
		}
	}
}

// FuzzScanKeysMatchesWalk: on valid JSON, scanKeys (decodeStrict's check
// after a successful decode) gives checkUnambiguous's verdict — accepted,
// or refused as ambiguous — for every target type a request decodes into.
func FuzzScanKeysMatchesWalk(f *testing.F) {
	type inner struct {
		A string `json:"a"`
	}
	type target struct {
		X   string            `json:"x"`
		In  *inner            `json:"in"`
		M   map[string]inner  `json:"m"`
		L   []inner           `json:"l"`
		Any any               `json:"any"`
		S   map[string]string `json:"s"`
	}
	for _, seed := range []string{
		`{"x":"1","in":{"a":"2"},"m":{"k":{"a":"v"},"K2":{"A":"w"}},"l":[{"a":"1"},{"a":"2"}]}`,
		`{"in":{"a":"1","A":"2"}}`, `{"l":[{"a":"1","a":"2"}]}`, `{"x":"1","X":"1"}`,
		`{"certific\u0061te":"x","certificate":"y"}`, `{"x":"a\"b\\","x\\":1, "s" : {"k":"v","\u004b":"w"}}`,
		`{"any":` + strings.Repeat(`[`, 33) + strings.Repeat(`]`, 33) + `}`,
		`{"any":` + strings.Repeat(`{"a":`, 31) + `1` + strings.Repeat(`}`, 31) + `}`,
		` {"name":"a","csr":"-----BEGIN\n","metadata":{"team":"a","Team":"b"}} `, `[1,{"a":true,"a":null}]`, `"s"`, `-1.5e3`,
	} {
		f.Add([]byte(seed))
	}
	targets := []any{&target{}, &registerRequest{}, &rotateRequest{}, &revokeRequest{}, &verifyRequest{},
		&createAPIKeyRequest{}, &jwtSVIDRequest{}, &vrfIndexRequest{}, new(any)}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		for _, tg := range targets {
			walk, scan := checkUnambiguous(data, tg), scanKeys(data, tg)
			if (walk == nil) != (scan == nil) || errors.Is(walk, errAmbiguousJSON) != errors.Is(scan, errAmbiguousJSON) {
				t.Fatalf("%T: checkUnambiguous = %v, scanKeys = %v", tg, walk, scan)
			}
		}
	})
}

// TestDecodeStrictReasons: every refusal names the reason it named before
// the body was decoded first (an ambiguous key before an unknown field or a
// wrong type), and a decoded body leaves nothing after it.
func TestDecodeStrictReasons(t *testing.T) {
	const (
		ambiguous = "the body has a duplicate or case-variant key"
		unknown   = "the body has an unknown field"
		badJSON   = "the body is not valid JSON for this endpoint"
		notOne    = "the body must be one JSON object"
	)
	for _, tc := range []struct{ body, want string }{
		{`{"certificate":"a","certificate":"b"}`, ambiguous},
		{`{"certificate":"a","bogus":1,"bogus":2}`, ambiguous},
		{`{"bogus":1,"Bogus":2,"certificate":5}`, ambiguous},
		{`{"Certificate":"a"}`, ambiguous},
		{`{"certificate":"a","bogus":1}`, unknown},
		{`{"certificate":5}`, badJSON},
		{`{"certificate":"a",}`, badJSON},
		{`{"certificate":"a","certificate":}`, ambiguous},
		{`{"certificate":"a",,}`, badJSON},
		{`{"certificate":"a"} {"chain":"b"}`, notOne},
		{`{"certificate":"a"} {"chain":"b","chain":"c"}`, notOne},
		{`{"certificate":"a"} x`, notOne},
		{`{"certificate":"a"}`, ""},
		{" {\"certificate\":\"a\"}\n", ""},
	} {
		var v verifyRequest
		err := decodeStrict([]byte(tc.body), &v)
		var ae *apiError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.body, err)
		case tc.want != "" && (!errors.As(err, &ae) || ae.Message != tc.want || ae.Status != 400):
			t.Errorf("%s: %v, want 400 %q", tc.body, err, tc.want)
		}
	}
}

// BenchmarkDecodeStrict is a verify request's body (a leaf and a chain of
// two, ~2.6 KB, mostly PEM).
func BenchmarkDecodeStrict(b *testing.B) {
	pem := "-----BEGIN CERTIFICATE-----\n" + strings.Repeat(strings.Repeat("A", 64)+"\n", 12) + "-----END CERTIFICATE-----\n"
	body, err := json.Marshal(verifyRequest{Certificate: pem, Chain: pem + pem})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var v verifyRequest
		if err := decodeStrict(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// TestScanKeysEndsOnInvalidJSON: scanKeys is only given valid JSON, but on
// anything else it still returns instead of panicking or looping.
func TestScanKeysEndsOnInvalidJSON(t *testing.T) {
	for _, body := range []string{`{"`, `[}`, `{"a":}`, `{"a" 1}`, `{1:2}`, `[,]`, `{"a":[`, `"`, `{"a\`, ``} {
		_ = scanKeys([]byte(body), &verifyRequest{})
		_ = scanKeys([]byte(body), new(any))
	}
}
