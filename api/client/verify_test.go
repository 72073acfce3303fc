package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
)

// TestVerifyDecodesAnswer: the client decodes a verify answer with
// encoding/json/v2 — every field, the receipt byte for byte, a field it
// does not know ignored (a newer server), and an answer that is not JSON
// is an error, not a zero result.
func TestVerifyDecodesAnswer(t *testing.T) {
	const receipt = `{"format":"atr-receipt/v1","leaf_index":9,"proof":["q80="],"checkpoint":"atr.example/log\n10\nq80=\n"}`
	tests := []struct {
		name, answer string
		want         client.VerifyResult
		wantErr      bool
	}{
		{name: "verified with receipt",
			answer: `{"verified":true,"agent":"bot.acme","status":"issued","serial":"0a0b","fingerprint_sha256":"ff00",` +
				`"not_after":"2026-12-07T09:48:33Z","log_index":9,"receipt":` + receipt + `,"added_later":{"x":[1,2]}}`,
			want: client.VerifyResult{Verified: true, Agent: "bot.acme", Status: "issued", Serial: "0a0b",
				FingerprintSHA256: "ff00", Receipt: []byte(receipt)}},
		{name: "refused", answer: `{"verified":false,"reason":"revoked","serial":"0a0b"}`,
			want: client.VerifyResult{Reason: "revoked", Serial: "0a0b"}},
		{name: "not JSON", answer: `<html>`, wantErr: true},
		{name: "wrong type", answer: `{"verified":"yes"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tt.answer))
			}))
			defer srv.Close()
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Verify(context.Background(), []byte("-----BEGIN CERTIFICATE-----\n"), nil)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Verify = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.Verified {
				if got.NotAfter == nil || !got.NotAfter.Equal(time.Date(2026, 12, 7, 9, 48, 33, 0, time.UTC)) {
					t.Errorf("NotAfter = %v", got.NotAfter)
				}
				if got.LogIndex == nil || *got.LogIndex != 9 {
					t.Errorf("LogIndex = %v", got.LogIndex)
				}
			}
			if !bytes.Equal(got.Receipt, tt.want.Receipt) {
				t.Errorf("Receipt = %s, want %s", got.Receipt, tt.want.Receipt)
			}
			got.NotAfter, got.LogIndex, got.Receipt, tt.want.Receipt = nil, nil, nil, nil
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Verify = %+v, want %+v", *got, tt.want)
			}
		})
	}
}

// TestVerifyAsksForTheReceipt: Verify leaves the receipt to the server's
// default (it has one); VerifyWithoutReceipt sends "receipt": false, which
// the server answers without one.
func TestVerifyAsksForTheReceipt(t *testing.T) {
	var body map[string]json.RawMessage
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body = nil
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("request body: %v", err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"verified":true}`))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cert := []byte("-----BEGIN CERTIFICATE-----\n")
	for _, tt := range []struct {
		name        string
		call        func(context.Context, []byte, []byte) (*client.VerifyResult, error)
		wantReceipt string // "" for no receipt member
	}{
		{"Verify", c.Verify, ""},
		{"VerifyWithoutReceipt", c.VerifyWithoutReceipt, "false"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.call(context.Background(), cert, nil); err != nil {
				t.Fatal(err)
			}
			if got := string(body["receipt"]); got != tt.wantReceipt {
				t.Errorf("receipt member %q, want %q", got, tt.wantReceipt)
			}
			if string(body["certificate"]) != `"-----BEGIN CERTIFICATE-----\n"` {
				t.Errorf("certificate member %s", body["certificate"])
			}
		})
	}
}

// BenchmarkVerify is a relying party's verify of a certificate, the
// server's answer (testdata/verify-answer.json: a real answer with its
// receipt, 3.2 KB) replayed by a loopback server: the client's side of
// atr-bench's verify floor (request encoding, the answer's read and
// decode), the HTTP exchange included.
func BenchmarkVerify(b *testing.B) {
	answer, err := os.ReadFile("testdata/verify-answer.json")
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	var a struct {
		Receipt struct {
			Opened struct {
				Certificate string `json:"certificate"`
			} `json:"opened"`
		} `json:"receipt"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		b.Fatal(err)
	}
	cert := []byte("-----BEGIN CERTIFICATE-----\n" + a.Receipt.Opened.Certificate + "\n-----END CERTIFICATE-----\n")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := c.Verify(ctx, cert, cert)
		if err != nil || !res.Verified || len(res.Receipt) == 0 {
			b.Fatalf("Verify = %+v, %v", res, err)
		}
	}
}
