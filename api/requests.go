package api

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agent-trust-registry/atr/registry"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Shape limits checked by Validate before the registry sees a request. The registry
// applies the real policy (names, CSR contents, namespaces); these only keep absurd
// input away from it.
const (
	maxNameLen       = 253
	maxPEMLen        = 64 << 10
	maxCapabilities  = 32
	maxCapabilityLen = 128
	maxMetadata      = 32
	maxMetaKeyLen    = 64
	maxMetaValueLen  = 1024
	maxReasonLen     = 64
	maxOwnerLen      = 128
	maxCursorLen     = 512
	maxIDLen         = 128
	defaultPageSize  = 50
	maxPageSize      = 100
	maxLogEntries    = 1000
)

// readJSON reads the body of r (already capped) and decodes it strictly into v.
func readJSON(r *http.Request, v any) error {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType, Message: "Content-Type must be application/json"}
	}
	buf := scratchBuffer()
	defer buf.release()
	data, err := readBodyInto(buf.b, r)
	buf.b = data
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mbe
		}
		return &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "could not read the request body", cause: err}
	}
	return decodeStrict(data, v)
}

// readBodyInto reads r's body whole into dst's room (a scratch buffer's),
// grown first to its declared length (bodyBuffer); io.ReadAll grows its
// buffer from 512 bytes, ~2× a verify body in garbage
// (docs/performance.md).
func readBodyInto(dst []byte, r *http.Request) ([]byte, error) {
	buf := bytes.NewBuffer(slices.Grow(dst[:0], bodyBuffer(r.ContentLength)))
	_, err := buf.ReadFrom(r.Body)
	return buf.Bytes(), err
}

// bodyBuffer is the first capacity readBody gives a body of declared
// length n (-1: not declared): room for all of it up to maxFirstBuffer, so
// that a client which declares a large body and sends nothing pins no
// more than that until the read timeout; a larger body grows as it comes.
func bodyBuffer(n int64) int {
	return int(min(max(n, 0), maxFirstBuffer)) + bytes.MinRead
}

// maxFirstBuffer is the most readBody reserves before the bytes arrive:
// 16 KiB, several times a verify's or a registration's body.
const maxFirstBuffer = 16 << 10

// decodeStrict decodes data into v: exactly one JSON object, no unknown fields, nothing
// after it, no ambiguous key (strictjson.go). Its errors never echo the input; after an
// error v holds whatever was decoded and must not be used.
func decodeStrict(data []byte, v any) error {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errInvalid("the body must be one JSON object")
	}
	if !utf8.Valid(data) {
		return errInvalid("the body must be UTF-8")
	}
	if err := jsonv2.Unmarshal(data, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		var syntax *jsontext.SyntacticError
		if errors.As(err, &syntax) && !errors.Is(err, jsontext.ErrDuplicateName) && oneValueThenMore(data) {
			return errInvalid("the body must be one JSON object")
		}
		return refusedBody(err)
	}
	if err := checkMapKeys(reflect.ValueOf(v)); err != nil {
		return refusedBody(err)
	}
	return nil
}

// registerRequest is the body of POST /v1/agents.
type registerRequest struct {
	Name         string            `json:"name"`
	CSR          string            `json:"csr"`
	Capabilities []string          `json:"capabilities"`
	Metadata     map[string]string `json:"metadata"`
}

func (q *registerRequest) Validate() error {
	if err := checkName(q.Name); err != nil {
		return err
	}
	if err := checkPEM("csr", q.CSR); err != nil {
		return err
	}
	if len(q.Capabilities) > maxCapabilities {
		return errInvalid("capabilities: too many")
	}
	for _, c := range q.Capabilities {
		if c == "" || len(c) > maxCapabilityLen || !printable(c) {
			return errInvalid("capabilities: each must be 1-128 printable characters")
		}
	}
	if len(q.Metadata) > maxMetadata {
		return errInvalid("metadata: too many entries")
	}
	for k, v := range q.Metadata {
		if k == "" || len(k) > maxMetaKeyLen || !printable(k) {
			return errInvalid("metadata: keys must be 1-64 printable characters")
		}
		if len(v) > maxMetaValueLen || !printable(v) {
			return errInvalid("metadata: values must be at most 1024 printable characters")
		}
	}
	return nil
}

func (q *registerRequest) toRegistry() registry.RegisterRequest {
	return registry.RegisterRequest{Name: q.Name, CSR: []byte(q.CSR), Capabilities: q.Capabilities, Metadata: q.Metadata}
}

// rotateRequest is the body of POST /v1/agents/{name}/rotate.
type rotateRequest struct {
	CSR string `json:"csr"`
}

func (q *rotateRequest) Validate() error { return checkPEM("csr", q.CSR) }

// revokeRequest is the body of POST /v1/agents/{name}/revoke.
type revokeRequest struct {
	Reason string `json:"reason"`
}

func (q *revokeRequest) Validate() error {
	if len(q.Reason) > maxReasonLen {
		return errInvalid("reason: too long")
	}
	for _, c := range q.Reason {
		if c > unicode.MaxASCII || !(unicode.IsLetter(c) || c == '_' || c == '-') {
			return errInvalid("reason: must be an RFC 5280 reason name")
		}
	}
	return nil
}

// verifyRequest is the body of POST /v1/verify.
type verifyRequest struct {
	Certificate string `json:"certificate"`
	Chain       string `json:"chain"`
	// Receipt asks for the certificate's log receipt; default true.
	Receipt *bool `json:"receipt"`
}

func (q *verifyRequest) Validate() error {
	if err := checkPEM("certificate", q.Certificate); err != nil {
		return err
	}
	if q.Chain != "" {
		return checkPEM("chain", q.Chain)
	}
	return nil
}

// createAPIKeyRequest is the body of POST /v1/admin/apikeys.
type createAPIKeyRequest struct {
	Owner     string   `json:"owner"`
	Namespace string   `json:"namespace"`
	Scopes    []string `json:"scopes"`
	ExpiresIn string   `json:"expires_in"`

	expiresIn time.Duration
}

func (q *createAPIKeyRequest) Validate() error {
	if q.Owner == "" || len(q.Owner) > maxOwnerLen || !printable(q.Owner) {
		return errInvalid("owner: required, at most 128 printable characters")
	}
	if len(q.Namespace) > maxNameLen || !printable(q.Namespace) {
		return errInvalid("namespace: at most 253 printable characters")
	}
	if len(q.Scopes) == 0 || len(q.Scopes) > 3 {
		return errInvalid("scopes: one to three of agents:read, agents:write, admin")
	}
	for _, sc := range q.Scopes {
		switch sc {
		case ScopeAgentsRead, ScopeAgentsWrite, ScopeAdmin:
		default:
			return errInvalid("scopes: one to three of agents:read, agents:write, admin")
		}
	}
	if q.ExpiresIn != "" {
		d, err := time.ParseDuration(q.ExpiresIn)
		if err != nil || d <= 0 {
			return errInvalid("expires_in: a positive Go duration such as \"720h\"")
		}
		q.expiresIn = d
	}
	return nil
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return errInvalid("name: required, at most 253 characters")
	}
	if !printable(name) || strings.ContainsAny(name, "/\\ ") {
		return errInvalid("name: invalid characters")
	}
	return nil
}

func checkPEM(field, v string) error {
	if v == "" {
		return errInvalid(field + ": required")
	}
	if len(v) > maxPEMLen {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: CodeRequestTooLarge, Message: field + ": too large"}
	}
	if !strings.Contains(v, "-----BEGIN ") {
		return errInvalid(field + ": must be PEM")
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) || c == '\u2028' || c == '\u2029' {
			return false
		}
	}
	return true
}

// pageParams reads cursor and limit from the query string.
func pageParams(r *http.Request) (cursor string, limit int, err error) {
	q := r.URL.Query()
	cursor = q.Get("cursor")
	if len(cursor) > maxCursorLen || !printable(cursor) {
		return "", 0, errInvalid("cursor: invalid")
	}
	limit = defaultPageSize
	if v := q.Get("limit"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 {
			return "", 0, errInvalid("limit: a positive integer")
		}
		limit = min(n, maxPageSize)
	}
	return cursor, limit, nil
}

// int64Param reads a non-negative integer query parameter.
func int64Param(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errInvalid(fmt.Sprintf("%s: a non-negative integer", name))
	}
	return n, nil
}
