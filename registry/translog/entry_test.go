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

func validEntries() map[string]Entry {
	return map[string]Entry{
		"register":      {Type: EventRegister, Time: testTime, Agent: "billing-bot.acme", Serial: "0a1b", Fingerprint: testFP, Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, Actor: "key:k1"},
		"rotate":        {Type: EventRotate, Time: testTime, Agent: "billing-bot.acme", Serial: "0a1c", Fingerprint: testFP, Actor: "agent:billing-bot.acme", Previous: testPrev},
		"revoke":        {Type: EventRevoke, Time: testTime.Add(123456789 * time.Nanosecond), Agent: "billing-bot.acme", Serial: "0a1c", Fingerprint: testFP, Actor: "key:k1", Reason: "keyCompromise"},
		"apikey_create": {Type: EventAPIKeyCreate, Time: testTime, Actor: "key:admin", KeyID: "k2"},
		"apikey_revoke": {Type: EventAPIKeyRevoke, Time: testTime, Actor: "key:admin", KeyID: "k2", Reason: "superseded"},
		"ceremony":      {Type: EventCeremony, Time: testTime, Actor: "ceremony", Fingerprint: testFP, Previous: testPrev},
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
			if got.Version != EntryVersion || !got.Time.Equal(e.Time) || got.Type != e.Type || got.Fingerprint != e.Fingerprint {
				t.Errorf("ParseEntry = %+v, want %+v", got, e)
			}
		})
	}
}

func TestEntryCanonicalEncoding(t *testing.T) {
	e := validEntries()["rotate"]
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
		{"version 2", strings.Replace(good, `"v":1`, `"v":2`, 1)},
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
	base := validEntries()["register"]
	tests := map[string]func(e *Entry){
		"zero time":     func(e *Entry) { e.Time = time.Time{} },
		"unknown type":  func(e *Entry) { e.Type = "other" },
		"version 2":     func(e *Entry) { e.Version = 2 },
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
