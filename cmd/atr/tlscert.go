package main

import (
	"fmt"
	"net"
	"net/url"
	"os"

	"github.com/agent-trust-registry/atr/ca"
)

// serverNames are the names the self-issued certificate covers: the listen
// host (unless it is a wildcard address), localhost, 127.0.0.1, ::1, the
// host name, the public URL's host and the operator's extra names. A DNS
// name is kept in its ca.NormalizeAgentName form (lowercase, DNS-label
// rules) when it has one, and dropped otherwise; the result passes
// ca.ValidateServerNames, the rule the registry issues by.
func serverNames(cfg Config) ([]string, []net.IP, error) {
	var (
		dns  []string
		ips  []net.IP
		seen = map[string]bool{}
	)
	add := func(n string) {
		if ip := net.ParseIP(n); ip != nil {
			if k := ip.String(); !ip.IsUnspecified() && !seen[k] {
				seen[k] = true
				ips = append(ips, ip)
			}
			return
		}
		if d, err := ca.NormalizeAgentName(n); err == nil && !seen[d] {
			seen[d] = true
			dns = append(dns, d)
		}
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	add(host)
	add("localhost")
	add("127.0.0.1")
	add("::1")
	if h, err := os.Hostname(); err == nil {
		add(h)
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil {
		add(u.Hostname())
	}
	for _, n := range cfg.TLSNames {
		add(n)
	}
	if err := ca.ValidateServerNames(dns, ips); err != nil {
		return nil, nil, fmt.Errorf("names for the server certificate: %w", err)
	}
	return dns, ips, nil
}
