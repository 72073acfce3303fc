package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
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
		var fields map[string]reflect.Type // exact JSON names of a struct's fields
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = jsonFields(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := make(map[string]bool)
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			folded := strings.ToLower(key)
			if seen[folded] {
				return fmt.Errorf("%w: duplicate or case-variant key", errAmbiguousJSON)
			}
			seen[folded] = true
			valType := elem
			if fields != nil {
				ft, exact := fields[key]
				if !exact {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return fmt.Errorf("%w: key differs in case from a field name", errAmbiguousJSON)
						}
					}
				}
				valType = ft
			}
			if err := walkJSON(dec, valType, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// jsonFields maps the JSON names of t's exported fields to their types, as
// encoding/json names them (tag name, else the Go field name).
func jsonFields(t reflect.Type) map[string]reflect.Type {
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
