package rp_test

import (
	"os"
	"testing"

	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// TestMain sets up SoftHSM2 for the tests that run a real registry
// (registrytest); without it they skip (fail under CI=true).
func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }
