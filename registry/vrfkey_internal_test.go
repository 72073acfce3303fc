package registry

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
)

// internalVRFKey is the VRF key of this package's internal tests, which cannot use
// registrytest (it imports registry): a software RSA-3072 key made once per test
// binary. The token-backed VRF is tested in registry/translog and cmd/atr.
var internalVRFKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 3072) })

func testVRFSigner(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := internalVRFKey()
	if err != nil {
		t.Fatalf("VRF key: %v", err)
	}
	return k
}
