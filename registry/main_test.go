package registry_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// TestMain sets SoftHSM2 up once for this test binary (see hsmtest).
func TestMain(m *testing.M) {
	cleanup, err := hsmtest.Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}
