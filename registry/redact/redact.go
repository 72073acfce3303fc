// Package redact removes secrets from text before it is logged or stored in
// the audit trail: PEM private keys (any "… PRIVATE KEY" block, also when the
// END line is missing), ATR API keys (atr_<id>_<secret>: the id is kept, the
// secret removed), bearer and basic credentials, and PIN / password / secret
// assignments (pin=1234, "pin-value=…", password: …).
//
// Redact is idempotent: redacting redacted text changes nothing. Hook applies
// it to every logrus entry (message and fields), so a secret that reaches a
// log call by accident is still not written.
package redact

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"

	"github.com/sirupsen/logrus"
)

// Placeholder replaces a removed secret.
const Placeholder = "[REDACTED]"

// The patterns are RE2 (linear time), compiled once; they are never modified.
var (
	privateKeyRE = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`)
	apiKeyRE     = regexp.MustCompile(`atr_[A-Za-z0-9_-]{8,}(?:\[REDACTED\])?`)
	apiKeyIDRE   = regexp.MustCompile(`^atr_([0-9a-f]{16})_`)
	authRE       = regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)(?:(?:bearer|basic)\s+)*[A-Za-z0-9\-._~+/]+=*`)
	assignRE     = regexp.MustCompile(`(?i)(\b(?:user[_-]?pin|so[_-]?pin|pin[_-]?value|pin|passphrase|password|passwd|pwd|secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token)"?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s&;,"']+)`)
)

// Redact returns s with every secret it recognizes replaced.
func Redact(s string) string { return redact(s, false) }

// redact is Redact; always runs every pattern, even where it cannot match
// (the tests compare the two).
func redact(s string, always bool) string {
	if s == "" {
		return s
	}
	if strings.Contains(s, "PRIVATE KEY-----") {
		s = privateKeyRE.ReplaceAllString(s, "[REDACTED PRIVATE KEY]")
	}
	if strings.Contains(s, "atr_") {
		s = apiKeyRE.ReplaceAllStringFunc(s, func(m string) string {
			if sub := apiKeyIDRE.FindStringSubmatch(m); sub != nil {
				return "atr_" + sub[1] + "_" + Placeholder
			}
			return Placeholder
		})
	}
	// Assignment values and credentials are found in the same text and
	// removed together: removing either first could hide the other (in
	// "pin= Bearer <token>" the PIN's value is the scheme word, in
	// "basic pin=<pin>" the credential is the assignment's name). Each
	// pattern runs only where it can match: assignRE needs a ':' or '=',
	// authRE white space after the scheme. Most values logged (ids, routes,
	// addresses) have neither, and every field of every request's log line
	// passes here.
	var spans [][2]int
	if always || strings.ContainsAny(s, ":=") {
		for _, m := range assignRE.FindAllStringSubmatchIndex(s, -1) {
			a, b := m[4], m[5] // the value
			switch v := s[a:b]; {
			case strings.HasPrefix(v, Placeholder), v == `"`+Placeholder+`"`, v == "'"+Placeholder+"'":
				continue
			case strings.HasPrefix(v, `"`), strings.HasPrefix(v, "'"):
				a, b = a+1, b-1 // the quotes stay
			}
			spans = append(spans, [2]int{a, b})
		}
	}
	if always || strings.ContainsAny(s, " \t\n\f\r") {
		for _, m := range authRE.FindAllStringSubmatchIndex(s, -1) {
			spans = append(spans, [2]int{m[5], m[1]}) // the scheme and its white space stay
		}
	}
	if len(spans) == 0 {
		return s
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	var out strings.Builder
	last := 0
	for k := 0; k < len(spans); {
		a, b := spans[k][0], spans[k][1]
		for k++; k < len(spans) && spans[k][0] <= b; k++ { // overlapping or touching
			b = max(b, spans[k][1])
		}
		out.WriteString(s[last:a])
		out.WriteString(Placeholder)
		last = b
	}
	out.WriteString(s[last:])
	return out.String()
}

// sensitiveWords are field/metadata key words whose values are always removed.
var sensitiveWords = map[string]bool{
	"pin": true, "password": true, "passwd": true, "passphrase": true, "secret": true,
	"authorization": true, "bearer": true, "apikey": true, "pwd": true, "credential": true,
	"credentials": true, "cookie": true,
}

// SensitiveKey reports whether a field or metadata key names a secret
// ("pin", "user_pin", "api_key", "Authorization", "private_key", "x-auth-token", …).
func SensitiveKey(k string) bool {
	words := strings.FieldsFunc(strings.ToLower(k), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	for i, w := range words {
		if sensitiveWords[w] {
			return true
		}
		if i > 0 && w == "key" && (words[i-1] == "api" || words[i-1] == "private" || words[i-1] == "secret") {
			return true
		}
		if i > 0 && w == "token" && (words[i-1] == "access" || words[i-1] == "auth" || words[i-1] == "refresh" || words[i-1] == "session") {
			return true
		}
	}
	return false
}

// RedactMap returns a copy of m with values of sensitive keys replaced and
// every other value passed through Redact. Keys are redacted too.
func RedactMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if SensitiveKey(k) {
			out[Redact(k)] = Placeholder
			continue
		}
		out[Redact(k)] = Redact(v)
	}
	return out
}

// Hook is a logrus.Hook that redacts the message and every string-like field
// (string, error, fmt.Stringer, []byte) of each entry, and drops the value of
// fields whose key names a secret. Install it with logger.AddHook(redact.Hook{}).
type Hook struct{}

// Levels implements logrus.Hook: all levels.
func (Hook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook. logrus hands hooks their own copy of the
// entry's data, so rewriting it is safe.
func (Hook) Fire(e *logrus.Entry) error {
	e.Message = Redact(e.Message)
	for k, v := range e.Data {
		if SensitiveKey(k) {
			e.Data[k] = Placeholder
			continue
		}
		switch x := v.(type) {
		case string:
			e.Data[k] = Redact(x)
		case error:
			e.Data[k] = Redact(x.Error())
		case []byte:
			e.Data[k] = Redact(string(x))
		case fmt.Stringer:
			e.Data[k] = Redact(x.String())
		case map[string]string:
			e.Data[k] = RedactMap(x)
		case []string:
			c := make([]string, len(x))
			for i, s := range x {
				c[i] = Redact(s)
			}
			e.Data[k] = c
		}
	}
	return nil
}
