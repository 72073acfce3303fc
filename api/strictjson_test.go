package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
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

// TestDecodeStrictRefusesAmbiguity: the refusals of EXT-03 at every depth a
// request type could have: nested structs, structs in slices, maps of
// structs, values of an interface field.
func TestDecodeStrictRefusesAmbiguity(t *testing.T) {
	type inner struct {
		A string `json:"a"`
	}
	type target struct {
		X   string            `json:"x"`
		In  inner             `json:"in"`
		M   map[string]string `json:"m"`
		L   []inner           `json:"l"`
		MI  map[string]inner  `json:"mi"`
		Any any               `json:"any"`
	}
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"x":"1","in":{"a":"2"},"m":{"k":"v","K2":"w"},"l":[{"a":"1"},{"a":"2"}],"mi":{"p":{"a":"1"}},"any":{"q":[1,{"r":2}]}}`, true},
		{`{"in":{"a":"1","A":"2"}}`, false},
		{`{"in":{"A":"1"}}`, false},
		{`{"l":[{"a":"1","a":"2"}]}`, false},
		{`{"l":[{"A":"1"}]}`, false},
		{`{"m":{"k":"1","k":"2"}}`, false},
		{`{"m":{"k":"1","K":"2"}}`, false},
		{`{"mi":{"p":{"a":"1"},"P":{"a":"2"}}}`, false},
		{`{"mi":{"p":{"a":"1","a":"2"}}}`, false},
		{`{"any":{"q":1,"Q":2}}`, false},
		{`{"any":[{"z":1,"z":2}]}`, false},
		{`{"x":"1","X":"1"}`, false},
		{`{"x":"1","\u0078":"1"}`, false},
		{`{"unknown":{"q":1,"Q":2}}`, false},
		{`{"m":{"s":"1","ſ":"2"}}`, false},
		{`{"m":{"k":"1","\u212a":"2"}}`, false},
		{`{"m":{"ß":"1","ẞ":"2"}}`, false},
		{`{"m":{"ss":"1","ß":"2"}}`, true}, // not equal under simple folding (EqualFold)
	}
	for _, tt := range tests {
		err := decodeStrict([]byte(tt.body), &target{})
		if (err == nil) != tt.ok {
			t.Errorf("decodeStrict(%s) = %v, want ok=%v", tt.body, err, tt.ok)
		}
	}
}

// FuzzDecodeStrictMatchesV1: a body decodeStrict accepts has no object
// with a repeated key or two keys equal but for case, at any depth
// (hasAmbiguousKeys: so a parser that keeps the first of repeated keys
// reads what ATR reads), and is read the same by encoding/json v1, the
// parser that matches names case-insensitively and keeps the last.
func FuzzDecodeStrictMatchesV1(f *testing.F) {
	for _, seed := range []string{
		`{"name":"a.b","csr":"-----BEGIN\n","capabilities":["x"],"metadata":{"team":"a","Env":"b"}}`,
		`{"name":"a","NAME":"b"}`, `{"certific\u0061te":"x","certificate":"y"}`, `{"certificate":"x","receipt":false}`,
		`{"owner":"o","namespace":"n","scopes":null,"expires_in":"1h"}`, `{"audience":["a","b"],"ttl_seconds":60}`,
		`{"metadata":{"k":"v","\u004b":"w"}}`, ` {"reason":"keyCompromise"} `, `{"csr":"\ud800"}`, `{"ttl_seconds":1e2}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		matchesV1[registerRequest](t, data)
		matchesV1[rotateRequest](t, data)
		matchesV1[revokeRequest](t, data)
		matchesV1[verifyRequest](t, data)
		matchesV1[createAPIKeyRequest](t, data)
		matchesV1[jwtSVIDRequest](t, data)
		matchesV1[vrfIndexRequest](t, data)
	})
}

func matchesV1[T any](t *testing.T, data []byte) {
	var strict, v1 T
	// The body's buffer is a scratch buffer the next request reuses
	// (readJSON): what decodeStrict returns must hold none of it.
	body := bytes.Clone(data)
	if decodeStrict(body, &strict) != nil {
		return
	}
	clear(body)
	if hasAmbiguousKeys(t, data) {
		t.Fatalf("%T: decodeStrict accepted %q, which repeats a key or has two equal but for case", strict, data)
	}
	if err := json.Unmarshal(data, &v1); err != nil {
		t.Fatalf("%T: decodeStrict accepted %q, encoding/json refuses it: %v", strict, data, err)
	}
	if !reflect.DeepEqual(strict, v1) {
		t.Fatalf("%T: %q reads %+v strictly, %+v with encoding/json", strict, data, strict, v1)
	}
}

// TestDecodeStrictReasons: every refusal names the first problem the
// decoder meets — a repeated or case-variant name, an unknown field, a
// wrong type, bad syntax or something after the object; map keys equal but
// for case are checked once the decode is done.
func TestDecodeStrictReasons(t *testing.T) {
	const (
		ambiguous = "the body has a duplicate or case-variant key"
		unknown   = "the body has an unknown field"
		badJSON   = "the body is not valid JSON for this endpoint"
		notOne    = "the body must be one JSON object"
	)
	for _, tc := range []struct{ body, want string }{
		{`{"certificate":"a","certificate":"b"}`, ambiguous},
		{`{"certificate":"a","bogus":1,"bogus":2}`, unknown},
		{`{"bogus":1,"Bogus":2,"certificate":5}`, unknown},
		{`{"Bogus":1,"certificate":"a","CERTIFICATE":"b"}`, unknown},
		{`{"chain":"a","CERTIFICATE":"b"}`, ambiguous},
		{`{"Certificate":"a"}`, ambiguous},
		{`{"certificate":"a","bogus":1}`, unknown},
		{`{"certificate":5}`, badJSON},
		{`{"certificate":"a",}`, badJSON},
		{`{"certificate":"a","certificate":}`, ambiguous},
		{`{"certificate":"a",,}`, badJSON},
		{`{"certificate":"a"} {"chain":"b"}`, notOne},
		{`{"certificate":"a"} {"chain":"b","chain":"c"}`, notOne},
		{`{"certificate":"a"} x`, notOne},
		{`{"certificate":5} x`, badJSON},
		{`{"certificate":"a","certificate":"b"} x`, ambiguous},
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

// TestReadBody: a body is read whole whether its length is declared or
// not, into a fresh buffer or a used scratch buffer with room or without
// (and stale bytes in it); one shorter than it declared is an error, and
// the body cap's refusal comes through as *http.MaxBytesError (413) either
// way.
func TestReadBody(t *testing.T) {
	for _, big := range []bool{false, true} {
		body := strings.Repeat("x", 3000)
		if big {
			body = strings.Repeat("y", 3*maxFirstBuffer) // grows past the first buffer
		}
		for _, dst := range [][]byte{nil, []byte(strings.Repeat("z", 100)), []byte(strings.Repeat("z", 20000))} {
			testReadBody(t, dst, body)
		}
	}
	// What is reserved before the bytes arrive is bounded, whatever the
	// declared length (a client that declares a large body and stalls).
	for _, tc := range []struct {
		declared int64
		want     int
	}{
		{-1, bytes.MinRead}, {0, bytes.MinRead}, {2249, 2249 + bytes.MinRead},
		{maxFirstBuffer, maxFirstBuffer + bytes.MinRead}, {64 << 10, maxFirstBuffer + bytes.MinRead}, {1 << 40, maxFirstBuffer + bytes.MinRead},
	} {
		if got := bodyBuffer(tc.declared); got != tc.want {
			t.Errorf("bodyBuffer(%d) = %d, want %d", tc.declared, got, tc.want)
		}
	}
}

func testReadBody(t *testing.T, dst []byte, body string) {
	t.Helper()
	size := int64(len(body))
	tests := []struct {
		name     string
		declared int64
		limit    int64
		wantErr  bool
		want413  bool
	}{
		{"declared", size, 1 << 20, false, false},
		{"chunked", -1, 1 << 20, false, false},
		{"declared longer than sent", size + 500, 1 << 20, true, false},
		{"chunked over the cap", -1, 1000, true, true},
		{"declared over the cap", size, 1000, true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s, %d bytes, dst of %d", tt.name, size, len(dst)), func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/verify", io.NopCloser(strings.NewReader(body)))
			r.ContentLength = tt.declared
			if tt.declared > int64(len(body)) {
				r.Body = io.NopCloser(io.MultiReader(strings.NewReader(body), iotest.ErrReader(io.ErrUnexpectedEOF)))
			}
			r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, tt.limit)
			got, err := readBodyInto(bytes.Clone(dst), r)
			var mbe *http.MaxBytesError
			switch {
			case tt.wantErr != (err != nil):
				t.Fatalf("readBodyInto = %d bytes, %v; want error %v", len(got), err, tt.wantErr)
			case tt.want413 != errors.As(err, &mbe):
				t.Fatalf("readBodyInto error %v; want *http.MaxBytesError %v", err, tt.want413)
			case err == nil && string(got) != body:
				t.Fatalf("readBodyInto = %d bytes, want the %d sent", len(got), len(body))
			}
		})
	}
}

// hasAmbiguousKeys is the fuzz target's oracle, independent of decodeStrict:
// a token walk that accepts repeated names and tells whether any object of
// data holds two names strings.EqualFold takes for equal.
func hasAmbiguousKeys(t *testing.T, data []byte) bool {
	t.Helper()
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var objects [][]string // the names of each open object
	for {
		kind, n := dec.StackIndex(dec.StackDepth())
		tok, err := dec.ReadToken()
		if err != nil {
			return false
		}
		if kind == '{' && n%2 == 0 && tok.Kind() == '"' { // a name
			name, names := tok.String(), objects[len(objects)-1]
			for _, seen := range names {
				if strings.EqualFold(seen, name) {
					return true
				}
			}
			objects[len(objects)-1] = append(names, name)
			continue
		}
		switch tok.Kind() {
		case '{':
			objects = append(objects, nil)
		case '}':
			objects = objects[:len(objects)-1]
		}
	}
}

// TestOracleSeesAmbiguity: the fuzz target's oracle is not vacuous.
func TestOracleSeesAmbiguity(t *testing.T) {
	for body, want := range map[string]bool{
		`{"a":1,"a":2}`: true, `{"a":{"b":1,"B":2}}`: true, `[{"s":1},{"x":{"s":1,"ſ":2}}]`: true, `{"a\u0062":1,"ab":2}`: true,
		`{"a":1,"b":{"a":1}}`: false, `{"ss":1,"ß":2}`: false, `[1,"a","a"]`: false,
	} {
		if got := hasAmbiguousKeys(t, []byte(body)); got != want {
			t.Errorf("hasAmbiguousKeys(%s) = %v, want %v", body, got, want)
		}
	}
}

// TestRequestTypesAreWalkable: checkMapKeys sees every key of a request
// body only if the request types hold no interface, json.RawMessage or
// type with its own unmarshaler (whose objects it cannot walk).
func TestRequestTypesAreWalkable(t *testing.T) {
	unmarshalers := []reflect.Type{
		reflect.TypeFor[json.Unmarshaler](), reflect.TypeFor[jsonv2.Unmarshaler](),
		reflect.TypeFor[jsonv2.UnmarshalerFrom](), reflect.TypeFor[encoding.TextUnmarshaler](),
	}
	var check func(path string, t2 reflect.Type)
	check = func(path string, typ reflect.Type) {
		if typ.Kind() == reflect.Interface {
			t.Errorf("%s is an interface (%v)", path, typ)
			return
		}
		for _, u := range unmarshalers {
			if reflect.PointerTo(typ).Implements(u) {
				t.Errorf("%s (%v) has its own unmarshaler (%v)", path, typ, u)
				return
			}
		}
		switch typ.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			check(path+"[]", typ.Elem())
		case reflect.Map:
			check(path+"{}", typ.Elem())
		case reflect.Struct:
			for i := range typ.NumField() {
				if f := typ.Field(i); f.IsExported() {
					check(path+"."+f.Name, f.Type)
				}
			}
		}
	}
	for _, v := range []any{registerRequest{}, rotateRequest{}, revokeRequest{}, verifyRequest{},
		createAPIKeyRequest{}, jwtSVIDRequest{}, vrfIndexRequest{}} {
		check(reflect.TypeOf(v).Name(), reflect.TypeOf(v))
	}
}

// TestRefusalsDoNotEchoTheBody: neither the answer nor the logged cause of
// a refusal quotes the body (encoding/json/v2's own errors quote names and
// pieces of values).
func TestRefusalsDoNotEchoTheBody(t *testing.T) {
	for _, body := range []string{
		`{"name":"a.b","csr":"x","metadata":{"s3cr3t":"1","s3cr3t":"2"}}`,
		`{"name":"a.b","csr":"x","metadata":{"s3cr3t":5}}`,
		`{"name":"a.b","csr":"\ud800 s3cr3t"}`,
		`{"s3cr3t":1}`, `{"NAME":"s3cr3t"}`, `{"name":"s3cr3t",}`, `{"name":"s3cr3t"} s3cr3t`,
		`{"metadata":{"s3cr3t":"1","S3CR3T":"2"}}`,
	} {
		err := decodeStrict([]byte(body), &registerRequest{})
		if err == nil {
			t.Errorf("%s: accepted", body)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(strings.ToLower(err.Error()), "s3cr3t") {
			t.Errorf("%s: the error quotes the body: %v", body, err)
		}
	}
}
