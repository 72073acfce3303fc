package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct {
	cmd, args string
	line      int
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the Dockerfile: %v", err)
	}
	var (
		out  []instruction
		cur  strings.Builder
		from int
	)
	for i, l := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			from = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: from})
		cur.Reset()
	}
	return out
}

// TestDockerfile checks what the image cannot be built here to show:
// SEC-005 (non-root user) and SEC-017 (a HEALTHCHECK that needs no curl).
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, filepath.Join("..", "..", "Dockerfile"))
	// Only the final stage matters at run time.
	last := 0
	for i, in := range ins {
		if in.cmd == "FROM" {
			last = i
			if f := strings.Fields(in.args); len(f) == 0 || !strings.Contains(f[0], ":") || strings.HasSuffix(f[0], ":latest") {
				t.Errorf("line %d: FROM %s: base images must be pinned to a tag", in.line, in.args)
			}
		}
	}
	final := ins[last:]
	var user, health, entry *instruction
	for i := range final {
		switch final[i].cmd {
		case "USER":
			user = &final[i]
		case "HEALTHCHECK":
			health = &final[i]
		case "ENTRYPOINT":
			entry = &final[i]
		}
	}
	t.Run("SEC-005 non-root user", func(t *testing.T) {
		if user == nil {
			t.Fatal("the final stage has no USER: the container would run as root")
		}
		name, _, _ := strings.Cut(user.args, ":")
		if name == "" || name == "root" || name == "0" {
			t.Errorf("line %d: USER %s runs as root", user.line, user.args)
		}
	})
	t.Run("SEC-017 healthcheck without curl", func(t *testing.T) {
		if health == nil {
			t.Fatal("the final stage has no HEALTHCHECK")
		}
		if strings.Contains(health.args, "NONE") {
			t.Fatalf("line %d: HEALTHCHECK NONE", health.line)
		}
		for _, tool := range []string{"curl", "wget"} {
			if strings.Contains(health.args, tool) {
				t.Errorf("line %d: HEALTHCHECK uses %s, which the image does not have", health.line, tool)
			}
		}
		if !strings.Contains(health.args, `"atr"`) || !strings.Contains(health.args, `"healthcheck"`) {
			t.Errorf("line %d: HEALTHCHECK %s does not run atr healthcheck", health.line, health.args)
		}
	})
	t.Run("entrypoint", func(t *testing.T) {
		if entry == nil || !strings.Contains(entry.args, `"atr"`) || !strings.Contains(entry.args, `"serve"`) {
			t.Errorf("ENTRYPOINT does not run atr serve: %+v", entry)
		}
	})
	t.Run("build context never includes the data dir", func(t *testing.T) {
		for _, in := range ins {
			if in.cmd != "COPY" || strings.Contains(in.args, "--from=") {
				continue
			}
			f := strings.Fields(in.args)
			for _, src := range f[:len(f)-1] {
				if src == "." || src == "./" || strings.HasPrefix(src, "var") || strings.HasPrefix(src, "./var") {
					t.Errorf("line %d: COPY %s would copy the working tree or the data dir (tokens, PIN) into the image", in.line, in.args)
				}
			}
		}
	})
	t.Run("no curl or wget installed", func(t *testing.T) {
		for _, in := range final {
			if in.cmd == "RUN" && (strings.Contains(in.args, " curl") || strings.Contains(in.args, " wget")) {
				t.Errorf("line %d: the runtime stage installs curl/wget", in.line)
			}
		}
	})
}
