package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
)

const testAdminKey = "atr_0123456789abcdef_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// fakeAdminAPI serves paged listings of n items each (agents, audit events,
// API keys) and DELETE of API keys, and records the requests.
type fakeAdminAPI struct {
	n        int
	mu       sync.Mutex
	requests []string
	revoked  []string
}

func (f *fakeAdminAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+testAdminKey {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(client.ErrorBody{Error: client.ErrorDetail{Code: "unauthenticated", Message: "authentication required", RequestID: "r1"}})
		return
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit == 0 {
		limit = 50
	}
	end := min(start+limit, f.n)
	next := ""
	if end < f.n {
		next = strconv.Itoa(end)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/agents":
		p := client.AgentList{Agents: []client.Agent{}, NextCursor: next}
		for i := start; i < end; i++ {
			p.Agents = append(p.Agents, client.Agent{Name: fmt.Sprintf("bot-%03d.acme", i), Owner: "acme-team", Status: "active", CurrentSerial: "a1b", UpdatedAt: at})
		}
		json.NewEncoder(w).Encode(p)
	case r.Method == "GET" && r.URL.Path == "/v1/admin/audit":
		p := client.AuditPage{Events: []client.AuditEvent{}, NextCursor: next}
		for i := start; i < end; i++ {
			idx := int64(i)
			p.Events = append(p.Events, client.AuditEvent{ID: int64(f.n - i), Time: at, Actor: "key:0123456789abcdef", Action: "agent.register",
				Target: fmt.Sprintf("bot-%03d.acme", i), Result: "success", LogIndex: &idx, Metadata: map[string]string{"owner": "acme team"}})
		}
		json.NewEncoder(w).Encode(p)
	case r.Method == "GET" && r.URL.Path == "/v1/admin/apikeys":
		p := client.APIKeyPage{APIKeys: []client.APIKey{}, NextCursor: next}
		for i := start; i < end; i++ {
			exp := at.Add(time.Duration(i-1) * time.Hour)
			k := client.APIKey{ID: fmt.Sprintf("%016x", i), Owner: "acme-team", Namespace: "acme", Scopes: []string{"agents:read", "agents:write"}, CreatedAt: at, ExpiresAt: &exp}
			if i == 2 {
				k.RevokedAt = &at
			}
			p.APIKeys = append(p.APIKeys, k)
		}
		json.NewEncoder(w).Encode(p)
	case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/v1/admin/apikeys/"):
		id := strings.TrimPrefix(r.URL.Path, "/v1/admin/apikeys/")
		if id == "ffffffffffffffff" {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(client.ErrorBody{Error: client.ErrorDetail{Code: "not_found", Message: "not found", RequestID: "r404"}})
			return
		}
		f.mu.Lock()
		f.revoked = append(f.revoked, id)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// TestAdminListings (issue 11 item 13): agents list, audit and apikey list
// follow every page (or stop at --limit), print aligned tables, and print one
// JSON array with --json.
func TestAdminListings(t *testing.T) {
	const n = 230 // three pages of 100
	tests := []struct {
		args      []string
		wantItems int
		header    string
		wantCells []string
	}{
		{[]string{"agents", "list"}, n, "NAME", []string{"bot-000.acme", "acme-team", "active", "0a1b"}},
		{[]string{"agents", "list", "--limit", "120"}, 120, "NAME", []string{"bot-119.acme"}},
		{[]string{"audit"}, n, "ID", []string{"agent.register", "bot-000.acme", "success", `owner="acme team"`}},
		{[]string{"audit", "--limit", "5"}, 5, "ID", []string{"key:0123456789abcdef"}},
		{[]string{"apikey", "list"}, n, "ID", []string{"0000000000000002", "revoked", "expired", "active", "agents:read,agents:write"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			api := &fakeAdminAPI{n: n}
			srv := httptest.NewServer(api)
			defer srv.Close()
			env := map[string]string{"ATR_SERVER": srv.URL, "ATR_API_KEY": testAdminKey}

			a, out, errb := testApp(env)
			a.now = func() time.Time { return time.Date(2026, 3, 1, 13, 30, 0, 0, time.UTC) }
			if code := a.run(context.Background(), tt.args); code != 0 {
				t.Fatalf("exit %d; stderr: %s", code, errb)
			}
			lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
			if got, want := len(lines), tt.wantItems+1; got != want {
				t.Fatalf("%d lines, want %d (header and one per item)", got, want)
			}
			if !strings.HasPrefix(lines[0], tt.header) {
				t.Errorf("header %q, want it to start with %q", lines[0], tt.header)
			}
			// Aligned: every column starts at the same offset on every line.
			starts := columnStarts(lines[0])
			for _, l := range lines[1:] {
				for _, s := range starts[1:] {
					if s >= len(l) || l[s-1] != ' ' || l[s] == ' ' {
						t.Fatalf("line %q is not aligned with the header %q", l, lines[0])
					}
				}
			}
			for _, c := range tt.wantCells {
				if !strings.Contains(out.String(), c) {
					t.Errorf("table lacks %q", c)
				}
			}
			if tt.wantItems < n && len(api.requests) > (tt.wantItems+99)/100 {
				t.Errorf("%d requests for %d items: fetched past --limit: %v", len(api.requests), tt.wantItems, api.requests)
			}

			a, out, errb = testApp(env)
			if code := a.run(context.Background(), append(tt.args, "--json")); code != 0 {
				t.Fatalf("--json: exit %d; stderr: %s", code, errb)
			}
			var items []map[string]any
			if err := json.Unmarshal(out.Bytes(), &items); err != nil {
				t.Fatalf("--json output is not one JSON array: %v\n%.300s", err, out)
			}
			if len(items) != tt.wantItems {
				t.Errorf("--json: %d items, want %d", len(items), tt.wantItems)
			}
		})
	}
}

// columnStarts returns the offsets where the header's columns begin.
func columnStarts(header string) []int {
	starts := []int{0}
	for i := 1; i < len(header); i++ {
		if header[i] != ' ' && header[i-1] == ' ' && i >= 2 && header[i-2] == ' ' {
			starts = append(starts, i)
		}
	}
	return starts
}

// pastedSecret is the secret half of a key a user might paste into apikey revoke.
const pastedSecret = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2"

func TestAPIKeyRevokeCommand(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		wantCall bool
	}{
		{"id last", []string{"apikey", "revoke", "0123456789abcdef"}, 0, "revoked API key 0123456789abcdef\n", true},
		{"id before --json", []string{"apikey", "revoke", "0123456789abcdef", "--json"}, 0, `"status": "revoked"`, true},
		{"unknown id", []string{"apikey", "revoke", "ffffffffffffffff"}, 1, "", true},
		{"not an id", []string{"apikey", "revoke", "atr_0123"}, 2, "", false},
		{"no id", []string{"apikey", "revoke"}, 2, "", false},
		{"two ids", []string{"apikey", "revoke", "0123456789abcdef", "0123456789abcdee"}, 2, "", false},
		// A whole key pasted by mistake is refused without echoing its secret (security review).
		{"whole key", []string{"apikey", "revoke", "atr_0123456789abcdef_" + pastedSecret}, 2, "", false},
		{"part of a secret", []string{"apikey", "revoke", pastedSecret[:40]}, 2, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &fakeAdminAPI{}
			srv := httptest.NewServer(api)
			defer srv.Close()
			a, out, errb := testApp(map[string]string{"ATR_SERVER": srv.URL, "ATR_API_KEY": testAdminKey})
			if code := a.run(context.Background(), tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, errb)
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout %q lacks %q", out, tt.stdout)
			}
			if got := len(api.requests) > 0; got != tt.wantCall {
				t.Errorf("server called: %v, want %v", got, tt.wantCall)
			}
			if strings.Contains(errb.String(), pastedSecret[:16]) {
				t.Errorf("stderr echoes the secret: %s", errb)
			}
			if tt.name == "whole key" && !strings.Contains(errb.String(), "atr apikey revoke 0123456789abcdef") {
				t.Errorf("stderr %q does not name the key's ID", errb)
			}
			if tt.code == 1 && !strings.Contains(errb.String(), "r404") {
				t.Errorf("stderr %q lacks the request ID", errb)
			}
		})
	}
}
