package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/agent"
)

// tourFileArgs are the options through which the README tour names a file
// that a command writes.
var tourFileArgs = regexp.MustCompile(`(?:--key|--cert|--chain|--state|--out|-o|>)\s+([^\s$"'|&;]+)`)

// TestReadmeTourLeavesRepositoryClean replays issue 11 item 10: the README
// tour left team.apikey, agent.key and certificates in the repository root,
// and .gitignore did not cover them. The tour now starts in a scratch
// directory, and every file it writes is ignored all the same.
func TestReadmeTourLeavesRepositoryClean(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	i := strings.Index(readme, "### Five minutes with an agent")
	if i < 0 {
		t.Fatal("README has no tour section")
	}
	tour := readme[i:]
	start := strings.Index(tour, "```sh\n")
	end := strings.Index(tour[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("the tour has no sh code block")
	}
	block := tour[start+6 : start+6+end]

	files := map[string]bool{}
	scratch := false
	for _, line := range strings.Split(block, "\n") {
		if strings.Contains(line, `cd "$(mktemp -d)"`) {
			scratch = true
		}
		for _, m := range tourFileArgs.FindAllStringSubmatch(line, -1) {
			f := m[1]
			if strings.HasPrefix(f, "/") {
				continue
			}
			if !scratch {
				t.Errorf("the tour writes %s before changing to a scratch directory: %q", f, line)
			}
			files[f] = true
			switch {
			case strings.HasSuffix(f, ".key"):
				files[f+agent.StagedSuffix] = true // a renewal's staged key
			case strings.HasPrefix(m[0], "--cert"):
				files[agent.ChainPath(f, "")] = true
				files[agent.ReceiptPath(f)] = true
				files["."+filepath.Base(f)+".tmp-123"] = true // writeAtomic's temporary file
			}
		}
	}
	for _, want := range []string{"team.apikey", "agent.key", "agent.pem", "agent.chain.pem"} {
		if !files[want] {
			t.Errorf("the tour no longer writes %s; update this test (found %v)", want, files)
		}
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		t.Skip("not a git checkout")
	}
	for f := range files {
		t.Run(f, func(t *testing.T) {
			cmd := exec.Command("git", "check-ignore", "--no-index", "-q", f)
			cmd.Dir = root
			if err := cmd.Run(); err != nil {
				t.Errorf("%s, written by the README tour, is not ignored by .gitignore (git check-ignore: %v)", f, err)
			}
		})
	}
}
