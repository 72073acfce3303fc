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

// Entry encoding versions. Version 1 (EntryVersion1) carried tenant plaintext
// (agent name, serial, certificate, actor, API key ID); it is still parsed, for
// the leaves written before version 2, and still written where a test needs one.
// Version 2 (EntryVersion, the default for new entries) carries none: see
// docs/transparency.md and Entry.
const (
	EntryVersion1 = 1
	EntryVersion  = 2
)

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
	EventServerCert   EventType = "server_cert"   // the registry's own TLS server certificate issued (version 2 only)
	EventAgentCard    EventType = "agent_card"    // an agent's A2A agent card signed (version 2 only)
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
// Its encoding (Marshal) is canonical: JSON with the fields in the order of
// the wire structs below, empty optional fields omitted, no insignificant
// whitespace, the time as RFC 3339 in UTC (time.RFC3339Nano, so "Z" and no
// trailing zeros in the fraction), DER as standard padded base64. The same
// Entry always encodes to the same bytes, and ParseEntry accepts only bytes
// that Marshal would produce.
//
// Version 2 (public, blinded; docs/transparency.md):
//
//	{"v":2,"type":"rotate","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"…",
//	 "issuer_key_id":"…","name_indexes":["…","…"],"previous_fingerprint_sha256":"…"}
//
// A version 2 server_cert entry (the registry's own TLS server certificate,
// which is public):
//
//	{"v":2,"type":"server_cert","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"…",
//	 "issuer_key_id":"…","certificate":"MIIB…"}
//
// A version 2 agent_card entry (an A2A agent card signed for the agent whose
// current certificate has fingerprint_sha256; card_sha256 is the SHA-256 of
// the card's RFC 8785 canonical form without "signatures", the JWS payload):
//
//	{"v":2,"type":"agent_card","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"…",
//	 "issuer_key_id":"…","name_indexes":["…","…"],"card_sha256":"…"}
//
// Version 1 (before the upgrade; names in clear):
//
//	{"v":1,"type":"rotate","time":"2026-01-02T03:04:05Z","agent":"billing-bot.acme",
//	 "serial":"…","fingerprint_sha256":"…","actor":"key:…","previous_fingerprint_sha256":"…"}
type Entry struct {
	// Version is the encoding version; Marshal writes EntryVersion when it
	// is 0. ParseEntry sets it from the leaf.
	Version int
	Type    EventType
	Time    time.Time // stored in UTC
	// Fingerprint is the SHA-256 of the certificate DER, 64 lowercase hex digits.
	Fingerprint string
	// Previous is the fingerprint of the certificate a rotation (or an
	// intermediate rotation ceremony) replaces.
	Previous string
	Reason   string // RFC 5280 reason name (revoke; v1: apikey_revoke)
	// Certificate is the certificate DER: v2 only for ceremony and
	// server_cert entries (CA certificates and the registry's TLS server
	// certificate are public, and carry no tenant data); v1 optional for
	// every type.
	Certificate []byte

	// Version 2 only.
	IssuerKeyID string   // the issuing CA's subject key identifier, lowercase hex
	NameIndexes []string // VRF indexes of the name and its parent suffixes, 64 hex each
	// CardDigest (agent_card only) is the SHA-256 of the signed agent card's
	// RFC 8785 canonical form, 64 lowercase hex digits.
	CardDigest string

	// Version 1 only.
	Agent  string // agent name (register, rotate, revoke)
	Serial string // certificate serial, lowercase hex
	Actor  string // who caused the event (API key ID, agent, "ceremony")
	KeyID  string // API key ID (apikey_create, apikey_revoke)
}

// MaxNameIndexes bounds an entry's name indexes (a name of at most 253
// characters has at most 127 labels).
const MaxNameIndexes = 127

// wireEntryV2 fixes the field order and names of the version 2 encoding.
type wireEntryV2 struct {
	V           int       `json:"v"`
	Type        EventType `json:"type"`
	Time        string    `json:"time"`
	Fingerprint string    `json:"fingerprint_sha256"`
	IssuerKeyID string    `json:"issuer_key_id"`
	NameIndexes []string  `json:"name_indexes,omitempty"`
	Previous    string    `json:"previous_fingerprint_sha256,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Certificate []byte    `json:"certificate,omitempty"`
	CardDigest  string    `json:"card_sha256,omitempty"`
}

// wireEntry fixes the field order and names of the version 1 encoding.
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
	switch e.Version {
	case 0, EntryVersion:
		return e.validateV2()
	case EntryVersion1:
		return e.validateV1()
	}
	return fmt.Errorf("%w: entry: version %d, want %d or %d", ErrInvalid, e.Version, EntryVersion1, EntryVersion)
}

// validateV2 checks a version 2 entry: no tenant plaintext at all, the fields
// each type needs, nothing else. Agent entries (register, rotate, revoke)
// carry name indexes and never a certificate; ceremony and server_cert
// entries carry the (public) certificate and no name indexes; server_cert
// entries carry neither a previous fingerprint nor a reason.
func (e Entry) validateV2() error {
	switch e.Type {
	case EventRegister, EventRotate, EventRevoke, EventCeremony, EventServerCert, EventAgentCard:
	default:
		return fmt.Errorf("%w: entry v2: type %q", ErrInvalid, e.Type)
	}
	if e.Time.IsZero() {
		return fmt.Errorf("%w: entry: time is required", ErrInvalid)
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: entry: time out of range", ErrInvalid)
	}
	if e.Agent != "" || e.Serial != "" || e.Actor != "" || e.KeyID != "" {
		return fmt.Errorf("%w: entry v2: agent, serial, actor and key_id are not public fields", ErrInvalid)
	}
	if !isHexFingerprint(e.Fingerprint) {
		return fmt.Errorf("%w: entry: fingerprint_sha256 is not 64 lowercase hex digits", ErrInvalid)
	}
	if !isLowerHex(e.IssuerKeyID) || len(e.IssuerKeyID)%2 != 0 || len(e.IssuerKeyID) > 128 {
		return fmt.Errorf("%w: entry v2: issuer_key_id must be lowercase hex of at most 64 bytes", ErrInvalid)
	}
	agentEvent := e.Type != EventCeremony && e.Type != EventServerCert
	switch {
	case agentEvent && (len(e.NameIndexes) == 0 || len(e.NameIndexes) > MaxNameIndexes):
		return fmt.Errorf("%w: entry v2: %s needs 1 to %d name_indexes", ErrInvalid, e.Type, MaxNameIndexes)
	case !agentEvent && len(e.NameIndexes) > 0:
		return fmt.Errorf("%w: entry v2: %s entries have no name_indexes", ErrInvalid, e.Type)
	}
	for _, ix := range e.NameIndexes {
		if !isHexFingerprint(ix) {
			return fmt.Errorf("%w: entry v2: a name index is not 64 lowercase hex digits", ErrInvalid)
		}
	}
	switch {
	case e.Type == EventRotate && e.Previous == "":
		return fmt.Errorf("%w: entry v2: previous_fingerprint_sha256 is required for rotate", ErrInvalid)
	case e.Type != EventRotate && e.Type != EventCeremony && e.Previous != "":
		return fmt.Errorf("%w: entry v2: previous_fingerprint_sha256 belongs to rotate and ceremony entries only", ErrInvalid)
	}
	if e.Previous != "" && !isHexFingerprint(e.Previous) {
		return fmt.Errorf("%w: entry: previous_fingerprint_sha256 is not 64 lowercase hex digits", ErrInvalid)
	}
	if (e.Type == EventRevoke) != (e.Reason != "") {
		return fmt.Errorf("%w: entry v2: reason is required for revoke and only there", ErrInvalid)
	}
	if err := validText("reason", e.Reason, false); err != nil {
		return err
	}
	if (e.Type == EventAgentCard) != (e.CardDigest != "") {
		return fmt.Errorf("%w: entry v2: card_sha256 is required for agent_card and only there", ErrInvalid)
	}
	if e.CardDigest != "" && !isHexFingerprint(e.CardDigest) {
		return fmt.Errorf("%w: entry v2: card_sha256 is not 64 lowercase hex digits", ErrInvalid)
	}
	if agentEvent == (len(e.Certificate) > 0) {
		return fmt.Errorf("%w: entry v2: a certificate is carried by ceremony and server_cert entries only, and always", ErrInvalid)
	}
	return nil
}

// validateV1 checks a version 1 entry (the format before version 2).
func (e Entry) validateV1() error {
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
	if e.IssuerKeyID != "" || len(e.NameIndexes) > 0 || e.CardDigest != "" {
		return fmt.Errorf("%w: entry v1: issuer_key_id, name_indexes and card_sha256 are version 2 fields", ErrInvalid)
	}
	return nil
}

// Marshal returns the canonical encoding of e (see Entry). It fails if e
// does not Validate or encodes to more than MaxEntrySize bytes.
func (e Entry) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var w any
	if e.Version == EntryVersion1 {
		w = e.wireV1()
	} else {
		w = wireEntryV2{
			V:           EntryVersion,
			Type:        e.Type,
			Time:        e.Time.UTC().Format(time.RFC3339Nano),
			Fingerprint: e.Fingerprint,
			IssuerKeyID: e.IssuerKeyID,
			NameIndexes: e.NameIndexes,
			Previous:    e.Previous,
			Reason:      e.Reason,
			Certificate: e.Certificate,
			CardDigest:  e.CardDigest,
		}
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

func (e Entry) wireV1() wireEntry {
	w := wireEntry{
		V:           EntryVersion1,
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
	return w
}

// ParseEntry decodes an entry and accepts it only if it is exactly the
// canonical encoding Marshal produces: unknown or duplicate fields, another
// version, other field order, whitespace, escapes, non-UTC or non-canonical
// times and non-canonical base64 are all refused with ErrInvalid.
func ParseEntry(data []byte) (Entry, error) {
	if len(data) > MaxEntrySize {
		return Entry{}, fmt.Errorf("%w: entry of %d bytes, max %d", ErrInvalid, len(data), MaxEntrySize)
	}
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Entry{}, fmt.Errorf("%w: entry: %v", ErrInvalid, err)
	}
	var e Entry
	var err error
	switch head.V {
	case EntryVersion:
		e, err = parseV2(data)
	case EntryVersion1:
		e, err = parseV1(data)
	default:
		return Entry{}, fmt.Errorf("%w: entry: version %d, want %d or %d", ErrInvalid, head.V, EntryVersion1, EntryVersion)
	}
	if err != nil {
		return Entry{}, err
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

func parseV2(data []byte) (Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w wireEntryV2
	if err := dec.Decode(&w); err != nil {
		return Entry{}, fmt.Errorf("%w: entry: %v", ErrInvalid, err)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: entry: time: %v", ErrInvalid, err)
	}
	return Entry{Version: EntryVersion, Type: w.Type, Time: t.UTC(), Fingerprint: w.Fingerprint, IssuerKeyID: w.IssuerKeyID,
		NameIndexes: w.NameIndexes, Previous: w.Previous, Reason: w.Reason, Certificate: w.Certificate, CardDigest: w.CardDigest}, nil
}

func parseV1(data []byte) (Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w wireEntry
	if err := dec.Decode(&w); err != nil {
		return Entry{}, fmt.Errorf("%w: entry: %v", ErrInvalid, err)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: entry: time: %v", ErrInvalid, err)
	}
	e := Entry{
		Version:     EntryVersion1,
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
	return e, nil
}
