package client_test

import (
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
)

// TestIsLoopbackHost: plain http goes only to the loopback interface
// without WithAllowHTTP, and atr serve's debug listener answers only
// loopback names; both ask IsLoopbackHost.
func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost": true, "127.0.0.1": true, "127.9.9.9": true,
		"::1": true, "::ffff:127.0.0.1": true,
		"": false, "localhost.": false, "localhost.example": false, "0.0.0.0": false, "::": false,
		"192.0.2.1": false, "::ffff:192.0.2.1": false, "fe80::1%lo": false, "[::1]": false, "atr.example": false,
	} {
		if got := client.IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
	for base, ok := range map[string]bool{
		"http://127.0.0.1:8443": true, "http://LOCALHOST:8443": true, "http://[::1]:8443": true,
		"http://atr.example:8443": false, "http://192.0.2.1": false, "https://atr.example": true,
	} {
		_, err := client.New(base)
		if (err == nil) != ok {
			t.Errorf("New(%q): %v, want ok=%v", base, err, ok)
		}
	}
	if _, err := client.New("http://atr.example:8443", client.WithAllowHTTP()); err != nil {
		t.Errorf("New with WithAllowHTTP: %v", err)
	}
}
