package translog

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	testFP   = strings.Repeat("ab", 32)
	testPrev = strings.Repeat("cd", 32)
	testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

var (
	testSKI = strings.Repeat("5a", 20)
	testIx  = []string{strings.Repeat("01", 32), strings.Repeat("02", 32)}
)

// validEntries are version 1 entries (the format before version 2) and version 2
// entries, keyed "v1 …" and "v2 …".
func validEntries() map[string]Entry {
	return map[string]Entry{
		"v1 register":      {Version: EntryVersion1, Type: EventRegister, Time: testTime, Agent: "billing-bot.acme", Serial: "0a1b", Fingerprint: testFP, Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, Actor: "key:k1"},
		"v1 rotate":        {Version: EntryVersion1, Type: EventRotate, Time: testTime, Agent: "billing-bot.acme", Serial: "0a1c", Fingerprint: testFP, Actor: "agent:billing-bot.acme", Previous: testPrev},
		"v1 revoke":        {Version: EntryVersion1, Type: EventRevoke, Time: testTime.Add(123456789 * time.Nanosecond), Agent: "billing-bot.acme", Serial: "0a1c", Fingerprint: testFP, Actor: "key:k1", Reason: "keyCompromise"},
		"v1 apikey_create": {Version: EntryVersion1, Type: EventAPIKeyCreate, Time: testTime, Actor: "key:admin", KeyID: "k2"},
		"v1 apikey_revoke": {Version: EntryVersion1, Type: EventAPIKeyRevoke, Time: testTime, Actor: "key:admin", KeyID: "k2", Reason: "superseded"},
		"v1 ceremony":      {Version: EntryVersion1, Type: EventCeremony, Time: testTime, Actor: "ceremony", Fingerprint: testFP, Previous: testPrev},
		"v2 register":      {Version: EntryVersion, Type: EventRegister, Time: testTime, Fingerprint: testFP, IssuerKeyID: testSKI, NameIndexes: testIx},
		"v2 rotate":        {Version: EntryVersion, Type: EventRotate, Time: testTime, Fingerprint: testFP, IssuerKeyID: testSKI, NameIndexes: testIx, Previous: testPrev},
		"v2 revoke":        {Version: EntryVersion, Type: EventRevoke, Time: testTime.Add(123456789 * time.Nanosecond), Fingerprint: testFP, IssuerKeyID: testSKI, NameIndexes: testIx[:1], Reason: "keyCompromise"},
		"v2 ceremony":      {Version: EntryVersion, Type: EventCeremony, Time: testTime, Fingerprint: testFP, IssuerKeyID: testSKI, Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x01}},
		"v2 ceremony rot":  {Version: EntryVersion, Type: EventCeremony, Time: testTime, Fingerprint: testFP, IssuerKeyID: testSKI, Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, Previous: testPrev},
		"v2 server_cert":   {Version: EntryVersion, Type: EventServerCert, Time: testTime, Fingerprint: testFP, IssuerKeyID: testSKI, Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x01}},
	}
}

// TestEntryV2CarriesNoTenantPlaintext: a version 2 entry refuses every field that
// names a tenant (issue 12: the public log reveals no agent name, owner, certificate or
// key ID), and its encoding holds none of them.
func TestEntryV2CarriesNoTenantPlaintext(t *testing.T) {
	base := validEntries()["v2 register"]
	for name, mutate := range map[string]func(e *Entry){
		"agent":       func(e *Entry) { e.Agent = "billing-bot.acme" },
		"serial":      func(e *Entry) { e.Serial = "0a1b" },
		"actor":       func(e *Entry) { e.Actor = "key:k1" },
		"key id":      func(e *Entry) { e.KeyID = "k1" },
		"certificate": func(e *Entry) { e.Certificate = []byte{0x30, 0x00} },
		"api key event": func(e *Entry) {
			e.Type, e.NameIndexes = EventAPIKeyCreate, nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := base
			mutate(&e)
			if b, err := e.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Marshal = %s, %v; want ErrInvalid", b, err)
			}
		})
	}
	b, err := base.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `","name_indexes":["` + testIx[0] + `","` + testIx[1] + `"]}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for name, e := range validEntries() {
		t.Run(name, func(t *testing.T) {
			b, err := e.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := ParseEntry(b)
			if err != nil {
				t.Fatalf("ParseEntry(%s): %v", b, err)
			}
			b2, err := got.Marshal()
			if err != nil || string(b2) != string(b) {
				t.Fatalf("re-Marshal = %s, %v; want %s", b2, err, b)
			}
			wantV := e.Version
			if wantV == 0 {
				wantV = EntryVersion
			}
			if got.Version != wantV || !got.Time.Equal(e.Time) || got.Type != e.Type || got.Fingerprint != e.Fingerprint {
				t.Errorf("ParseEntry = %+v, want %+v", got, e)
			}
		})
	}
}

func TestEntryCanonicalEncoding(t *testing.T) {
	e := validEntries()["v1 rotate"]
	e.Time = time.Date(2026, 1, 2, 4, 4, 5, 0, time.FixedZone("CET", 3600)) // same instant as testTime+0
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"type":"rotate","time":"2026-01-02T03:04:05Z","agent":"billing-bot.acme","serial":"0a1c","fingerprint_sha256":"` + testFP + `","actor":"agent:billing-bot.acme","previous_fingerprint_sha256":"` + testPrev + `"}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
}

func TestParseEntryRefuses(t *testing.T) {
	good := `{"v":1,"type":"apikey_create","time":"2026-01-02T03:04:05Z","actor":"key:admin","key_id":"k2"}`
	if _, err := ParseEntry([]byte(good)); err != nil {
		t.Fatalf("ParseEntry(good): %v", err)
	}
	tests := []struct{ name, in string }{
		{"unknown field", `{"v":1,"type":"apikey_create","time":"2026-01-02T03:04:05Z","actor":"key:admin","key_id":"k2","extra":1}`},
		{"version 2 with v1 fields", strings.Replace(good, `"v":1`, `"v":2`, 1)},
		{"version 3", strings.Replace(good, `"v":1`, `"v":3`, 1)},
		{"v2 name index uppercase", `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `","name_indexes":["` + strings.ToUpper(testFP) + `"]}`},
		{"v2 no name indexes", `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `"}`},
		{"v2 empty name indexes", `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `","name_indexes":[]}`},
		{"v2 agent name", `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `","name_indexes":["` + testIx[0] + `"],"agent":"a"}`},
		{"v2 no issuer", `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","name_indexes":["` + testIx[0] + `"]}`},
		{"v2 odd issuer", `{"v":2,"type":"register","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"abc","name_indexes":["` + testIx[0] + `"]}`},
		{"version missing", strings.Replace(good, `"v":1,`, ``, 1)},
		{"unknown type", strings.Replace(good, `apikey_create`, `apikey_steal`, 1)},
		{"field order", `{"type":"apikey_create","v":1,"time":"2026-01-02T03:04:05Z","actor":"key:admin","key_id":"k2"}`},
		{"whitespace", strings.Replace(good, `,"type"`, `, "type"`, 1)},
		{"trailing newline", good + "\n"},
		{"trailing data", good + `{}`},
		{"duplicate field", strings.Replace(good, `"key_id":"k2"`, `"key_id":"k2","key_id":"k3"`, 1)},
		{"non-UTC time", strings.Replace(good, `03:04:05Z`, `04:04:05+01:00`, 1)},
		{"trailing zero fraction", strings.Replace(good, `03:04:05Z`, `03:04:05.500Z`, 1)},
		{"not a time", strings.Replace(good, `2026-01-02T03:04:05Z`, `yesterday`, 1)},
		{"missing actor", strings.Replace(good, `"actor":"key:admin",`, ``, 1)},
		{"missing key id", strings.Replace(good, `,"key_id":"k2"`, ``, 1)},
		{"escaped character", strings.Replace(good, `"k2"`, `"\u006b2"`, 1)},
		{"control character", strings.Replace(good, `"k2"`, `"k\u00012"`, 1)},
		{"uppercase fingerprint", `{"v":1,"type":"ceremony","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + strings.ToUpper(testFP) + `","actor":"ceremony"}`},
		{"short fingerprint", `{"v":1,"type":"ceremony","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"abcd","actor":"ceremony"}`},
		{"non-canonical base64", `{"v":1,"type":"register","time":"2026-01-02T03:04:05Z","agent":"a","serial":"01","fingerprint_sha256":"` + testFP + `","certificate":"MAMCAQE","actor":"k"}`},
		{"rotate without previous", `{"v":1,"type":"rotate","time":"2026-01-02T03:04:05Z","agent":"a","serial":"01","fingerprint_sha256":"` + testFP + `","actor":"k"}`},
		{"revoke without reason", `{"v":1,"type":"revoke","time":"2026-01-02T03:04:05Z","agent":"a","serial":"01","fingerprint_sha256":"` + testFP + `","actor":"k"}`},
		{"uppercase serial", `{"v":1,"type":"register","time":"2026-01-02T03:04:05Z","agent":"a","serial":"0A","fingerprint_sha256":"` + testFP + `","actor":"k"}`},
		{"empty", ``},
		{"null", `null`},
		{"oversized", `{"v":1,"pad":"` + strings.Repeat("a", MaxEntrySize) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEntry([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseEntry(%.80q) error = %v, want ErrInvalid", tt.in, err)
			}
		})
	}
}

func TestMarshalRefuses(t *testing.T) {
	base := validEntries()["v1 register"]
	tests := map[string]func(e *Entry){
		"zero time":     func(e *Entry) { e.Time = time.Time{} },
		"unknown type":  func(e *Entry) { e.Type = "other" },
		"version 2":     func(e *Entry) { e.Version = 2 },
		"version 3":     func(e *Entry) { e.Version = 3 },
		"v2 fields":     func(e *Entry) { e.NameIndexes = testIx },
		"no agent":      func(e *Entry) { e.Agent = "" },
		"no serial":     func(e *Entry) { e.Serial = "" },
		"no actor":      func(e *Entry) { e.Actor = "" },
		"bad previous":  func(e *Entry) { e.Previous = "xyz" },
		"newline":       func(e *Entry) { e.Agent = "a\nb" },
		"huge cert":     func(e *Entry) { e.Certificate = make([]byte, MaxEntrySize) },
		"invalid UTF-8": func(e *Entry) { e.Actor = "\xff" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			e := base
			mutate(&e)
			if _, err := e.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Marshal error = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestEntryServerCert: a server_cert entry (the registry's own TLS server
// certificate) is version 2 only, carries the certificate DER, the
// fingerprint and the issuer key ID, and nothing an agent entry carries.
func TestEntryServerCert(t *testing.T) {
	base := validEntries()["v2 server_cert"]
	b, err := base.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":2,"type":"server_cert","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `","certificate":"MAMCAQE="}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
	for name, mutate := range map[string]func(e *Entry){
		"name indexes":   func(e *Entry) { e.NameIndexes = testIx },
		"no certificate": func(e *Entry) { e.Certificate = nil },
		"previous":       func(e *Entry) { e.Previous = testPrev },
		"reason":         func(e *Entry) { e.Reason = "superseded" },
		"agent":          func(e *Entry) { e.Agent = "billing-bot.acme" },
		"serial":         func(e *Entry) { e.Serial = "0a1b" },
		"actor":          func(e *Entry) { e.Actor = "system" },
		"no issuer":      func(e *Entry) { e.IssuerKeyID = "" },
		"no fingerprint": func(e *Entry) { e.Fingerprint = "" },
		"version 1":      func(e *Entry) { e.Version, e.IssuerKeyID, e.Actor = EntryVersion1, "", "system" },
	} {
		t.Run(name, func(t *testing.T) {
			e := base
			mutate(&e)
			if b, err := e.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Marshal = %s, %v; want ErrInvalid", b, err)
			}
		})
	}
	for name, in := range map[string]string{
		"v1 server_cert":           `{"v":1,"type":"server_cert","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","certificate":"MAMCAQE=","actor":"system"}`,
		"v2 server_cert no cert":   `{"v":2,"type":"server_cert","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `"}`,
		"v2 server_cert with name": `{"v":2,"type":"server_cert","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + testFP + `","issuer_key_id":"` + testSKI + `","name_indexes":["` + testIx[0] + `"],"certificate":"MAMCAQE="}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseEntry([]byte(in)); !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseEntry(%s) = %v; want ErrInvalid", in, err)
			}
		})
	}
}
