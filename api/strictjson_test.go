package api

import (
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
