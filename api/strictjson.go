package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"unicode"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// A request body is refused when different JSON parsers could read it
// differently, so that a proxy or WAF in front of ATR and ATR itself always
// see the same request (docs/security.md, EXT-03):
//
//   - an object with the same key twice, at any depth (some parsers keep the
//     first, others the last);
//   - a key that names a field of the target struct in another case ("NAME"
//     for "name"; encoding/json v1 matches names case-insensitively);
//   - a map with two keys that differ only in case.
//
// decodeStrict decodes with encoding/json/v2 (github.com/go-json-experiment/json,
// the module that mirrors the standard library's encoding/json/v2 and
// becomes it under Go 1.27). Its defaults give the first two: object names
// match exactly, a repeated name is a syntax error at any depth
// (jsontext.ErrDuplicateName, escapes decoded first), invalid UTF-8 is refused,
// and with RejectUnknownMembers a name in another case is an unknown member.
// checkMapKeys adds the third; it walks the decoded value, so a request
// type must hold no interface, json.RawMessage or value with its own
// unmarshaler, where keys would escape it (TestRequestTypesAreWalkable).
// v2 also decodes in one pass, where encoding/json scanned a body twice and
// the old key walk a third time (docs/performance.md).

// errAmbiguousJSON is the cause of a refusal for an ambiguous key. Its
// messages never echo the input.
var errAmbiguousJSON = errors.New("ambiguous JSON")

// refusedBody is the answer to a body decodeStrict refused with err: an
// ambiguous key, an unknown field, or JSON that is not valid for the
// endpoint — whichever the decoder met first. Neither the message nor the
// logged cause holds the input: encoding/json/v2's errors quote names and
// pieces of values, so the cause keeps only the kind and the byte offset.
func refusedBody(err error) error {
	msg, kind := "the body is not valid JSON for this endpoint", "not valid for the endpoint"
	var se *jsonv2.SemanticError
	switch {
	case errors.Is(err, errAmbiguousJSON):
		return &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest,
			Message: "the body has a duplicate or case-variant key", cause: err} // checkMapKeys' fixed text
	case errors.Is(err, jsontext.ErrDuplicateName):
		msg, kind = "the body has a duplicate or case-variant key", "a duplicate name"
	case errors.As(err, &se) && errors.Is(se.Err, jsonv2.ErrUnknownName):
		msg, kind = "the body has an unknown field", "an unknown name"
		if foldsToField(se.GoType, se.JSONPointer.LastToken()) {
			msg, kind = "the body has a duplicate or case-variant key", "a name in another case"
		}
	}
	return &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: msg,
		cause: fmt.Errorf("%w: %s at byte %d", errRefusedJSON, kind, errorOffset(err))}
}

// errRefusedJSON is the cause of every refusal by the decoder.
var errRefusedJSON = errors.New("json refused")

// errorOffset is where in the body the decoder stopped (-1: unknown).
func errorOffset(err error) int64 {
	var se *jsonv2.SemanticError
	var sy *jsontext.SyntacticError
	switch {
	case errors.As(err, &sy):
		return sy.ByteOffset
	case errors.As(err, &se):
		return se.ByteOffset
	}
	return -1
}

// foldsToField tells whether name is, but for case, the JSON name of a field
// of the struct type t (an unknown member that encoding/json v1 would have
// taken for that field).
func foldsToField(t reflect.Type, name string) bool {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return false
	}
	for field := range jsonFields(t) {
		if strings.EqualFold(field, name) {
			return true
		}
	}
	return false
}

// checkMapKeys refuses a decoded value holding, at any depth, a map with
// two string keys equal but for case. Types without a map are not walked.
func checkMapKeys(v reflect.Value) error {
	if !v.IsValid() || !mayHoldMap(v.Type()) {
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return checkMapKeys(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				if err := checkMapKeys(v.Field(i)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := checkMapKeys(v.Index(i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		seen := make(map[string]bool, v.Len())
		for it := v.MapRange(); it.Next(); {
			if k := it.Key(); k.Kind() == reflect.String {
				folded := foldKey(k.String())
				if seen[folded] {
					return fmt.Errorf("%w: map keys that differ only in case", errAmbiguousJSON)
				}
				seen[folded] = true
			}
			if err := checkMapKeys(it.Value()); err != nil {
				return err
			}
		}
	}
	return nil
}

// foldKey maps s to one spelling for all the strings strings.EqualFold
// takes for equal to it: each rune becomes the least of its case-folding
// orbit, so "s", "S" and "ſ" (U+017F), or "k", "K" and the Kelvin sign,
// fold alike, as encoding/json v1 and Java's equalsIgnoreCase match them.
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// mayHoldMap tells whether a value of type t can hold a map (an interface
// can hold anything). Cached per type: a verify's body has no map and is
// not walked.
func mayHoldMap(t reflect.Type) bool {
	if m, ok := holdsMap.Load(t); ok {
		return m.(bool)
	}
	m := typeMayHoldMap(t, map[reflect.Type]bool{})
	holdsMap.Store(t, m)
	return m
}

var holdsMap sync.Map // reflect.Type → bool

func typeMayHoldMap(t reflect.Type, visiting map[reflect.Type]bool) bool {
	if visiting[t] {
		return false // a recursive type: its other branches decide
	}
	visiting[t] = true
	switch t.Kind() {
	case reflect.Map, reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return typeMayHoldMap(t.Elem(), visiting)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && typeMayHoldMap(f.Type, visiting) {
				return true
			}
		}
	}
	return false
}

// jsonFields lists the JSON names of t's exported fields as the JSON
// packages name them (tag name, else the Go field name). The sets are made
// once per type and shared: callers only read them.
func jsonFields(t reflect.Type) map[string]bool {
	if m, ok := fieldsByType.Load(t); ok {
		return m.(map[string]bool)
	}
	m, _ := fieldsByType.LoadOrStore(t, structFields(t))
	return m.(map[string]bool)
}

var fieldsByType sync.Map // reflect.Type → map[string]bool

func structFields(t reflect.Type) map[string]bool {
	m := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			if tag == "-" {
				continue
			}
			if n, _, _ := strings.Cut(tag, ","); n != "" {
				name = n
			}
		}
		m[name] = true
	}
	return m
}

// oneValueThenMore tells whether data starts with one valid JSON value and
// holds something after it: why a body decodeStrict refused is not one
// object.
func oneValueThenMore(data []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewBuffer(data))
	if _, err := dec.ReadValue(); err != nil {
		return false
	}
	_, err := dec.ReadToken()
	return err != io.EOF
}
