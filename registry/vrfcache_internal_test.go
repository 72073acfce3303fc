package registry

import (
	"fmt"
	"testing"
)

// TestVRFCacheKeepsRecentNames replays the tenth pass's profile of the real
// server: the VRF cache started over whenever it held maxCachedNames names,
// so a fleet that fit in it lost, at every wrap, the proofs of all the names
// it had just registered, and each of their rotations paid an RSA-3072
// verification of the stored proof (8.5 % of the server's CPU at c=16). The
// cache now evicts the least recently used name: the newest maxCachedNames
// names are always held, and a name in use stays.
func TestVRFCacheKeepsRecentNames(t *testing.T) {
	name := func(i int) string { return fmt.Sprintf("a%d.team.acme", i) }
	out := func(i int) vrfOutput {
		return vrfOutput{index: [32]byte{byte(i), byte(i >> 8)}, proof: []byte{byte(i)}}
	}
	var c vrfCache
	const extra = 1_000
	for i := range maxCachedNames + extra {
		c.put(name(i), out(i))
		if i == 0 {
			continue
		}
		// Name 0 is in use (an agent rotating often): it stays.
		if _, ok := c.get(name(0)); !ok {
			t.Fatalf("after %d puts: the name read at every put was evicted", i+1)
		}
	}
	held := 0
	for i := range maxCachedNames + extra {
		got, ok := c.get(name(i))
		recent := i == 0 || i > extra
		switch {
		case ok && got.index != out(i).index:
			t.Fatalf("%s: cached output of another name", name(i))
		case recent && !ok:
			t.Fatalf("%s, one of the %d most recently used names, is not cached", name(i), maxCachedNames)
		case ok:
			held++
		}
	}
	if held > maxCachedNames {
		t.Errorf("the cache holds %d names, bound %d", held, maxCachedNames)
	}
}
