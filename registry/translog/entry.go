package translog

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// EntryVersion is the only entry encoding version this package writes and
// accepts.
const EntryVersion = 1

// EventType names the lifecycle event an entry records.
type EventType string

// The event types. Anything else is refused by Marshal and ParseEntry.
const (
	EventRegister     EventType = "register"      // agent registered, first certificate issued
	EventRotate       EventType = "rotate"        // new certificate replaces Previous
	EventRevoke       EventType = "revoke"        // certificate revoked for Reason
	EventAPIKeyCreate EventType = "apikey_create" // API key KeyID created
	EventAPIKeyRevoke EventType = "apikey_revoke" // API key KeyID revoked
	EventCeremony     EventType = "ceremony"      // CA ceremony (e.g. intermediate rotation)
)

func (t EventType) valid() bool {
	switch t {
	case EventRegister, EventRotate, EventRevoke, EventAPIKeyCreate, EventAPIKeyRevoke, EventCeremony:
		return true
	}
	return false
}

// Entry is one leaf of the log.
//
// Its encoding (Marshal) is canonical: JSON with the fields in the order
// below, empty optional fields omitted, no insignificant whitespace, the
// time as RFC 3339 in UTC (time.RFC3339Nano, so "Z" and no trailing zeros in
// the fraction), the certificate DER as standard padded base64, and "v":1.
// The same Entry always encodes to the same bytes, and ParseEntry accepts
// only bytes that Marshal would produce.
//
//	{"v":1,"type":"rotate","time":"2026-01-02T03:04:05Z","agent":"billing-bot.acme",
//	 "serial":"…","fingerprint_sha256":"…","actor":"key:…","previous_fingerprint_sha256":"…"}
type Entry struct {
	// Version is the encoding version; Marshal writes EntryVersion when it
	// is 0 and refuses any other value. ParseEntry sets it to EntryVersion.
	Version int
	Type    EventType
	Time    time.Time // stored in UTC
	Agent   string    // agent name (register, rotate, revoke)
	Serial  string    // certificate serial, lowercase hex
	// Fingerprint is the SHA-256 of the certificate DER, 64 lowercase hex digits.
	Fingerprint string
	Certificate []byte // certificate DER, optional
	Actor       string // who caused the event (API key ID, agent, "ceremony")
	// Previous is the fingerprint of the certificate a rotation (or an
	// intermediate rotation ceremony) replaces.
	Previous string
	Reason   string // RFC 5280 reason name (revoke, apikey_revoke)
	KeyID    string // API key ID (apikey_create, apikey_revoke)
}

// wireEntry fixes the field order and names of the encoding.
type wireEntry struct {
	V           int       `json:"v"`
	Type        EventType `json:"type"`
	Time        string    `json:"time"`
	Agent       string    `json:"agent,omitempty"`
	Serial      string    `json:"serial,omitempty"`
	Fingerprint string    `json:"fingerprint_sha256,omitempty"`
	Certificate []byte    `json:"certificate,omitempty"`
	Actor       string    `json:"actor"`
	Previous    string    `json:"previous_fingerprint_sha256,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	KeyID       string    `json:"key_id,omitempty"`
}

func isHexFingerprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func isLowerHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func validText(field, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%w: entry: %s is required", ErrInvalid, field)
		}
		return nil
	}
	if !utf8.ValidString(s) || len(s) > 1024 {
		return fmt.Errorf("%w: entry: %s is not valid UTF-8 of at most 1024 bytes", ErrInvalid, field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: entry: %s contains a control character", ErrInvalid, field)
		}
	}
	return nil
}

// Validate checks the entry's fields: a known type, a non-zero time, an
// actor, well-formed fingerprints and serial, and the fields each type
// needs (register/rotate/revoke: agent, serial, fingerprint; rotate:
// previous; revoke: reason; apikey_*: key ID; ceremony: fingerprint).
func (e Entry) Validate() error {
	if e.Version != 0 && e.Version != EntryVersion {
		return fmt.Errorf("%w: entry: version %d, want %d", ErrInvalid, e.Version, EntryVersion)
	}
	if !e.Type.valid() {
		return fmt.Errorf("%w: entry: unknown type %q", ErrInvalid, e.Type)
	}
	if e.Time.IsZero() {
		return fmt.Errorf("%w: entry: time is required", ErrInvalid)
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: entry: time out of range", ErrInvalid)
	}
	needsCert := e.Type == EventRegister || e.Type == EventRotate || e.Type == EventRevoke
	checks := []struct {
		field    string
		value    string
		required bool
	}{
		{"agent", e.Agent, needsCert},
		{"serial", e.Serial, needsCert},
		{"actor", e.Actor, true},
		{"reason", e.Reason, e.Type == EventRevoke},
		{"key_id", e.KeyID, e.Type == EventAPIKeyCreate || e.Type == EventAPIKeyRevoke},
	}
	for _, c := range checks {
		if err := validText(c.field, c.value, c.required); err != nil {
			return err
		}
	}
	if e.Serial != "" && !isLowerHex(e.Serial) {
		return fmt.Errorf("%w: entry: serial %q is not lowercase hex", ErrInvalid, e.Serial)
	}
	if e.Fingerprint == "" && (needsCert || e.Type == EventCeremony) {
		return fmt.Errorf("%w: entry: fingerprint_sha256 is required for %s", ErrInvalid, e.Type)
	}
	if e.Fingerprint != "" && !isHexFingerprint(e.Fingerprint) {
		return fmt.Errorf("%w: entry: fingerprint_sha256 is not 64 lowercase hex digits", ErrInvalid)
	}
	if e.Previous == "" && e.Type == EventRotate {
		return fmt.Errorf("%w: entry: previous_fingerprint_sha256 is required for rotate", ErrInvalid)
	}
	if e.Previous != "" && !isHexFingerprint(e.Previous) {
		return fmt.Errorf("%w: entry: previous_fingerprint_sha256 is not 64 lowercase hex digits", ErrInvalid)
	}
	return nil
}

// Marshal returns the canonical encoding of e (see Entry). It fails if e
// does not Validate or encodes to more than MaxEntrySize bytes.
func (e Entry) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	w := wireEntry{
		V:           EntryVersion,
		Type:        e.Type,
		Time:        e.Time.UTC().Format(time.RFC3339Nano),
		Agent:       e.Agent,
		Serial:      e.Serial,
		Fingerprint: e.Fingerprint,
		Certificate: e.Certificate,
		Actor:       e.Actor,
		Previous:    e.Previous,
		Reason:      e.Reason,
		KeyID:       e.KeyID,
	}
	if len(w.Certificate) == 0 {
		w.Certificate = nil
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("translog: encoding entry: %w", err)
	}
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: entry encodes to %d bytes, max %d", ErrInvalid, len(b), MaxEntrySize)
	}
	return b, nil
}

// ParseEntry decodes an entry and accepts it only if it is exactly the
// canonical encoding Marshal produces: unknown or duplicate fields, another
// version, other field order, whitespace, escapes, non-UTC or non-canonical
// times and non-canonical base64 are all refused with ErrInvalid.
func ParseEntry(data []byte) (Entry, error) {
	if len(data) > MaxEntrySize {
		return Entry{}, fmt.Errorf("%w: entry of %d bytes, max %d", ErrInvalid, len(data), MaxEntrySize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w wireEntry
	if err := dec.Decode(&w); err != nil {
		return Entry{}, fmt.Errorf("%w: entry: %v", ErrInvalid, err)
	}
	if w.V != EntryVersion {
		return Entry{}, fmt.Errorf("%w: entry: version %d, want %d", ErrInvalid, w.V, EntryVersion)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: entry: time: %v", ErrInvalid, err)
	}
	e := Entry{
		Version:     EntryVersion,
		Type:        w.Type,
		Time:        t.UTC(),
		Agent:       w.Agent,
		Serial:      w.Serial,
		Fingerprint: w.Fingerprint,
		Certificate: w.Certificate,
		Actor:       w.Actor,
		Previous:    w.Previous,
		Reason:      w.Reason,
		KeyID:       w.KeyID,
	}
	canon, err := e.Marshal()
	if err != nil {
		return Entry{}, err
	}
	if !bytes.Equal(canon, data) {
		return Entry{}, fmt.Errorf("%w: entry is not in canonical encoding", ErrInvalid)
	}
	return e, nil
}
