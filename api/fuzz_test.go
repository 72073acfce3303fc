package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// fuzzDecode checks a request decoder on arbitrary bytes: no panic; errors are
// *apiError with a fixed message that never echoes the input; accepted input
// re-encodes to something the decoder accepts again.
func fuzzDecode[T any, P interface {
	*T
	Validate() error
}](t *testing.T, data []byte) {
	var v T
	err := decodeStrict(data, &v)
	if err == nil {
		err = P(&v).Validate()
	}
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			t.Fatalf("error %T %v, want *apiError", err, err)
		}
		if ae.Status != 400 && ae.Status != 413 {
			t.Fatalf("status %d, want 400 or 413", ae.Status)
		}
		if len(data) > 8 && len(ae.Message) > 0 && strings.Contains(ae.Message, string(data)) {
			t.Fatalf("message %q echoes the input", ae.Message)
		}
		return
	}
	again, err := json.Marshal(&v)
	if err != nil {
		t.Fatalf("re-encoding: %v", err)
	}
	var w T
	if err := decodeStrict(again, &w); err != nil {
		t.Fatalf("re-decoding %s: %v", again, err)
	}
}

func FuzzDecodeRegisterRequest(f *testing.F) {
	f.Add([]byte(`{"name":"bot.acme","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n","capabilities":["a"],"metadata":{"k":"v"}}`))
	f.Add([]byte(`{"name":"bot.acme","owner":"evil"}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[registerRequest](t, data) })
}

func FuzzDecodeVerifyRequest(f *testing.F) {
	f.Add([]byte(`{"certificate":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[verifyRequest](t, data) })
}

func FuzzDecodeRevokeRequest(f *testing.F) {
	f.Add([]byte(`{"reason":"keyCompromise"}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[revokeRequest](t, data) })
}

func FuzzDecodeCreateAPIKeyRequest(f *testing.F) {
	f.Add([]byte(`{"owner":"team","namespace":"team.example","scopes":["agents:write"],"expires_in":"720h"}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[createAPIKeyRequest](t, data) })
}
