package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// errAmbiguousJSON is the cause of every refusal by checkUnambiguous. Its
// messages never echo the input.
var errAmbiguousJSON = errors.New("ambiguous JSON")

// maxJSONDepth bounds the nesting checkUnambiguous walks; request bodies are
// flat objects with string maps and arrays, so anything deeper is refused.
const maxJSONDepth = 32

// checkUnambiguous refuses a JSON document that different parsers could read
// differently, so that a proxy or WAF in front of ATR and ATR itself always
// see the same request:
//
//   - an object with the same key twice, at any depth (encoding/json keeps the
//     last one, other parsers keep the first);
//   - an object with two keys that differ only in case, at any depth
//     (encoding/json matches struct fields case-insensitively);
//   - a key that names a field of the target struct in another case
//     ("NAME" for "name"), which encoding/json would accept silently.
//
// target is the value decodeStrict decodes into; its type tells which objects
// are structs. The caller has already checked that data is UTF-8.
func checkUnambiguous(data []byte, target any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	t := reflect.TypeOf(target)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return walkJSON(dec, t, 0)
}

// walkJSON consumes one JSON value from dec. t is the Go type the value will
// be decoded into, or nil when unknown.
func walkJSON(dec *json.Decoder, t reflect.Type, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("%w: nested deeper than %d", errAmbiguousJSON, maxJSONDepth)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := walkJSON(dec, elem, depth+1); err != nil {
				return err
			}
		}
	case '{':
		fields, elem := objectTypes(t)
		seen := make(map[string]bool)
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			valType, err := checkKey(seen, fields, elem, key)
			if err != nil {
				return err
			}
			if err := walkJSON(dec, valType, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// objectTypes tells what an object decoded into t holds: a struct's fields
// by their exact JSON names, or a map's value type (both nil: unknown).
func objectTypes(t reflect.Type) (fields map[string]reflect.Type, elem reflect.Type) {
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = jsonFields(t)
		case reflect.Map:
			elem = t.Elem()
		}
	}
	return fields, elem
}

// checkKey checks an object's key against the keys seen before it (folded
// to lower case) and, for a struct, its fields' exact names; it returns
// the Go type of the key's value (elem for a map, nil when unknown).
func checkKey(seen map[string]bool, fields map[string]reflect.Type, elem reflect.Type, key string) (reflect.Type, error) {
	folded := strings.ToLower(key)
	if seen[folded] {
		return nil, fmt.Errorf("%w: duplicate or case-variant key", errAmbiguousJSON)
	}
	seen[folded] = true
	if fields == nil {
		return elem, nil
	}
	ft, exact := fields[key]
	if !exact {
		for name := range fields {
			if strings.EqualFold(name, key) {
				return nil, fmt.Errorf("%w: key differs in case from a field name", errAmbiguousJSON)
			}
		}
	}
	return ft, nil
}

// scanKeys is checkUnambiguous for data that is one valid JSON value
// (encoding/json has just decoded it), with the same verdicts and errors
// (FuzzScanKeysMatchesWalk): where the walk above has encoding/json
// tokenize and unquote every value, this skips over scalars and strings
// and unquotes only the keys, about a tenth of the work for a body that is
// mostly PEM (docs/performance-history.md, eighteenth pass). It checks little
// syntax: on anything but valid JSON it refuses or gives a verdict that
// means nothing, but always ends.
func scanKeys(data []byte, target any) error {
	t := reflect.TypeOf(target)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s := keyScanner{data: data}
	return s.value(t, 0)
}

type keyScanner struct {
	data []byte
	i    int
}

func (s *keyScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// str skips the string starting at s.i and returns it with its quotes.
func (s *keyScanner) str() []byte {
	start := s.i
	s.i++ // the opening quote
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case '\\':
			s.i += 2 // an escape: the next byte is never the closing quote
		case '"':
			s.i++
			return s.data[start:s.i]
		default:
			s.i++
		}
	}
	return s.data[start:]
}

// value skips one value; t is as in walkJSON.
func (s *keyScanner) value(t reflect.Type, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("%w: nested deeper than %d", errAmbiguousJSON, maxJSONDepth)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s.space()
	if s.i >= len(s.data) {
		return io.ErrUnexpectedEOF
	}
	switch s.data[s.i] {
	case '"':
		s.str()
		return nil
	case '[':
		s.i++
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for {
			s.space()
			if s.i < len(s.data) && s.data[s.i] == ']' {
				s.i++
				return nil
			}
			if err := s.value(elem, depth+1); err != nil {
				return err
			}
			s.space()
			if s.i < len(s.data) && s.data[s.i] == ',' {
				s.i++
			}
		}
	case '{':
		s.i++
		fields, elem := objectTypes(t)
		seen := make(map[string]bool)
		for {
			s.space()
			if s.i >= len(s.data) {
				return io.ErrUnexpectedEOF
			}
			if s.data[s.i] == '}' {
				s.i++
				return nil
			}
			if s.data[s.i] != '"' {
				return errNotScannable
			}
			raw := s.str()
			var key string
			if len(raw) < 2 || raw[len(raw)-1] != '"' {
				return errNotScannable
			} else if bytes.IndexByte(raw, '\\') < 0 {
				key = string(raw[1 : len(raw)-1])
			} else if err := json.Unmarshal(raw, &key); err != nil {
				return err
			}
			valType, err := checkKey(seen, fields, elem, key)
			if err != nil {
				return err
			}
			s.space()
			s.i++ // the colon
			if err := s.value(valType, depth+1); err != nil {
				return err
			}
			s.space()
			if s.i < len(s.data) && s.data[s.i] == ',' {
				s.i++
			}
		}
	default: // a number, true, false or null
		start := s.i
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', ']', '}', ' ', '\t', '\r', '\n':
				if s.i == start {
					return errNotScannable // no value here: not valid JSON
				}
				return nil
			}
			s.i++
		}
		return nil
	}
}

// errNotScannable is scanKeys' refusal of input that is not valid JSON,
// which decodeStrict never gives it: a refusal rather than a panic or a
// loop.
var errNotScannable = errors.New("not valid JSON")

// jsonFields maps the JSON names of t's exported fields to their types, as
// encoding/json names them (tag name, else the Go field name). The maps
// are made once per type and shared: callers only read them.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldsByType.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m, _ := fieldsByType.LoadOrStore(t, structFields(t))
	return m.(map[string]reflect.Type)
}

var fieldsByType sync.Map // reflect.Type → map[string]reflect.Type

func structFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
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
		m[name] = f.Type
	}
	return m
}
