package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
)

// TestErrorPrefixOnce checks that errors carry "registry: " once however
// deep they are wrapped, and stay errors.Is their sentinel.
func TestErrorPrefixOnce(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
		is   error
	}{
		{"no rows", dbErr("certificate 0a", sql.ErrNoRows), "registry: certificate 0a: not found", ErrNotFound},
		{"wrapped twice", wrap("rotate", dbErr("superseding certificate 0a", ErrConflict)), "registry: rotate: superseding certificate 0a: conflict", ErrConflict},
		{"sentinel", fmt.Errorf("registry: rotate: agent a is revoked: %w", bare(ErrConflict)), "registry: rotate: agent a is revoked: conflict", ErrConflict},
		{"ours through dbErr", dbErr("register: log", fmt.Errorf("registry: log: %w", bare(ErrUnavailable))), "registry: register: log: log: unavailable", ErrUnavailable},
		{"canceled", wrap("ocsp", dbErr("certificate status", context.Canceled)), "registry: ocsp: certificate status: context canceled", context.Canceled},
		{"invalid", wrap("register", invalid("csr", nil)), "registry: register: invalid input: csr", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", tt.err, tt.is)
			}
		})
	}
	if wrap("x", nil) != nil || dbErr("x", nil) != nil || bare(nil) != nil {
		t.Errorf("nil error wrapped into non-nil")
	}
}
