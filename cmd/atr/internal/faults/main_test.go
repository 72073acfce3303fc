package faults

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// TestMain builds the atr binary once (unless ATR_FAULTS_BIN names one) and
// sets up the in-process SoftHSM2 directory for TestTokenTrouble.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(BinaryEnv) == "" {
		dir, err := os.MkdirTemp("", "atr-faults-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		bin, err := BuildBinary(ctx, dir)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Setenv(BinaryEnv, bin)
	}
	cleanup, err := hsmtest.Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	return m.Run()
}
