package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFloorRows: the floor phase measures GET /healthz, verify with its
// receipt, verify without it and, when given an OCSP request, OCSP, in
// that order of rows; the targets are on verify with the receipt (the
// API's default, the issue's) and OCSP only. A server that refuses
// "receipt": false (one older than that field) leaves that row
// unavailable and the others measured. The verify row's note gives the
// size of its answer.
func TestFloorRows(t *testing.T) {
	const rounds, n = 2, 6
	tests := []struct {
		name        string
		ocsp        bool
		refuseBare  bool
		wantNames   []string
		wantTargets []string
		wantBare    int // verifies without the receipt the server answered
	}{
		{name: "with OCSP", ocsp: true,
			wantNames:   []string{"GET /healthz, concurrency 2", floorVerifyName, floorBareName, floorOCSPName},
			wantTargets: []string{"", ">=0.7", "", ">=0.7"}, wantBare: 1 + rounds*n},
		{name: "without OCSP",
			wantNames:   []string{"GET /healthz, concurrency 2", floorVerifyName, floorBareName},
			wantTargets: []string{"", ">=0.7", ""}, wantBare: 1 + rounds*n},
		{name: "receipt false refused", ocsp: true, refuseBare: true,
			wantNames:   []string{"GET /healthz, concurrency 2", floorVerifyName, floorBareName, floorOCSPName},
			wantTargets: []string{"", ">=0.7", "", ">=0.7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bare atomic.Int64
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/healthz":
					w.Write([]byte(`{"status":"ok"}`))
				case "/v1/ocsp":
					w.Write([]byte{0x30, 0x03, 0x0a, 0x01, 0x00})
				case "/v1/verify":
					var req struct {
						Receipt *bool `json:"receipt"`
					}
					if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					if req.Receipt != nil {
						if tt.refuseBare {
							w.Header().Set("Content-Type", "application/json")
							w.WriteHeader(http.StatusBadRequest)
							w.Write([]byte(`{"error":{"code":"invalid_request","message":"unknown field"}}`))
							return
						}
						bare.Add(1)
					}
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"verified":true}`))
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			cf, _ := testClients(t, srv, 0)
			var ocspReq []byte
			if tt.ocsp {
				ocspReq = []byte{0x30, 0x00}
			}
			rows := floorLoad(context.Background(), cf, srv.URL, 0, rounds, n, 2, "cert", "", ocspReq)
			if len(rows) != len(tt.wantNames) {
				t.Fatalf("%d rows, want %d: %+v", len(rows), len(tt.wantNames), rows)
			}
			for i, r := range rows {
				if r.Name != tt.wantNames[i] || r.Target != tt.wantTargets[i] {
					t.Errorf("row %d: %q target %q, want %q target %q", i, r.Name, r.Target, tt.wantNames[i], tt.wantTargets[i])
				}
				wantUnavailable := tt.refuseBare && r.Name == floorBareName
				if r.Unavailable != wantUnavailable {
					t.Errorf("row %q unavailable %v (%s), want %v", r.Name, r.Unavailable, r.Note, wantUnavailable)
				}
				if !r.Unavailable && r.Name != rows[0].Name && r.Ratio == nil {
					t.Errorf("row %q has no ratio to GET /healthz", r.Name)
				}
				// The verify row says how large the answer is (the
				// fake server's: {"verified":true}).
				if wantSize := "the answer: 17 bytes of body, "; (r.Name == floorVerifyName) != strings.Contains(r.Note, wantSize) {
					t.Errorf("row %q note %q: want %q on the verify row alone", r.Name, r.Note, wantSize)
				}
			}
			if got := bare.Load(); got != int64(tt.wantBare) {
				t.Errorf("%d verifies without the receipt answered, want %d (the probe and %d rounds of %d)", got, tt.wantBare, rounds, n)
			}
		})
	}
}
