package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
)

// TestWriteCertificateMatchesMarshal: writeCertificate writes the bytes
// writeJSONStatus writes for the same issuance (encoding/json compacting the
// opened entry and the receipt), with both, one or neither present, and with
// strings encoding/json escapes (HTML characters, U+2028) inside them.
func TestWriteCertificateMatchesMarshal(t *testing.T) {
	raw := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	opened := raw(map[string]any{"v": 1, "leaf_index": 7, "name": "a<b>&c\u2028", "vrf_proofs": []string{"AAEC", "AwQF"}})
	receipt := raw(map[string]any{"format": "atr-receipt-v1", "leaf": []byte{0, 1, 2}, "opened": json.RawMessage(opened),
		"checkpoint": "atr.example/log\n8\nq80=\n\n— atr.example/log AAAA\n", "witnessed": true})
	base := registry.Issued{
		Agent:          registry.Agent{Name: "billing-bot.acme", Owner: "acme<&>\u2028", Status: "active"},
		Certificate:    registry.CertificateRecord{Serial: "0a0b", FingerprintSHA256: "ff00", NotBefore: time.Unix(1e9, 0), NotAfter: time.Unix(1e9+3600, 0)},
		CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		ChainPEM:       "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
		LogIndex:       7,
	}
	for _, tc := range []struct {
		name            string
		opened, receipt []byte
	}{
		{"both", opened, receipt},
		{"no receipt", opened, nil},
		{"neither", nil, nil},
	} {
		iss := base
		iss.Opened, iss.Receipt = tc.opened, tc.receipt
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		writeJSONStatus(want, http.StatusCreated, certificateBody(&iss))
		writeCertificate(got, http.StatusCreated, &iss)
		if got.Code != want.Code || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
			t.Errorf("%s: writeCertificate wrote %d %s\nwriteJSONStatus %d %s", tc.name, got.Code, got.Body, want.Code, want.Body)
		}
		if g, w := got.Header().Get("Content-Length"), want.Header().Get("Content-Length"); g != w {
			t.Errorf("%s: Content-Length %s, want %s", tc.name, g, w)
		}
	}
}

// TestWriteVerifyResultMatchesMarshal: writeVerifyResult writes the bytes
// writeJSONStatus writes for the same answer, with and without a receipt
// (one holding strings encoding/json escapes) and for a refusal.
func TestWriteVerifyResultMatchesMarshal(t *testing.T) {
	receipt, err := json.Marshal(map[string]any{"format": "atr-receipt/v1", "leaf_index": 3,
		"opened": json.RawMessage(`{"name":"a\u003cb\u003e\u0026c\u2028"}`), "checkpoint": "atr.example/log\n4\nq80=\n"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1e9, 0).UTC()
	idx := int64(3)
	for _, tc := range []struct {
		name string
		out  client.VerifyResult
	}{
		{"verified with receipt", client.VerifyResult{Verified: true, Agent: "billing-bot.acme", Status: "issued",
			Serial: "0a0b", FingerprintSHA256: "ff00", NotAfter: &at, LogIndex: &idx, Receipt: receipt}},
		{"verified without receipt", client.VerifyResult{Verified: true, Agent: "billing-bot.acme", Status: "issued", LogIndex: &idx}},
		{"refused", client.VerifyResult{Reason: "untrusted_chain", Serial: "0a0b"}},
		{"HTML characters in an encoded field", client.VerifyResult{Agent: "a<b>&c\u2028.acme", Receipt: receipt}},
	} {
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		writeJSONStatus(want, http.StatusOK, tc.out)
		writeVerifyResult(got, tc.out)
		if got.Code != want.Code || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
			t.Errorf("%s: writeVerifyResult wrote %d %s\nwriteJSONStatus %d %s", tc.name, got.Code, got.Body, want.Code, want.Body)
		}
		if g, w := got.Header().Get("Content-Length"), want.Header().Get("Content-Length"); g != w {
			t.Errorf("%s: Content-Length %s, want %s", tc.name, g, w)
		}
	}
}

// TestMarshalThenRawOnAnEmptyObject: a raw field after no other field is
// not preceded by a comma.
func TestMarshalThenRawOnAnEmptyObject(t *testing.T) {
	b, err := marshalThenRaw(nil, struct{}{}, rawField{"a", json.RawMessage(`1`)}, rawField{"b", nil}, rawField{"c", json.RawMessage(`{}`)})
	if err != nil || string(b) != `{"a":1,"c":{}}` {
		t.Fatalf("marshalThenRaw = %s, %v", b, err)
	}
}
