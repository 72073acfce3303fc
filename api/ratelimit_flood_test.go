package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api/ratelimit"
)

// floodAddrs is the number of distinct client addresses of the failed-login flood
// (issue 11, item 1: ~100,000 used to fill the in-process table, whose bound is
// ratelimit.DefaultMaxKeys).
const floodAddrs = 150_000

// redisFloodAddrs is the flood against Redis, which has no table to fill: the
// property there is that one failure per address leaves no lockout key and no
// refusal, which a tenth of the flood shows as well (the full flood took more
// than two minutes of the CI's budget under -race).
const redisFloodAddrs = 15_000

// floodAddr is the i-th flood address: a distinct IPv6 /64 each.
func floodAddr(i int) string {
	return fmt.Sprintf("[2001:db8:%x:%x::1]:4711", i>>16, i&0xffff)
}

// serve sends one request straight into the handler from remote.
func serve(h http.Handler, method, path, remote, key string, body any) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = remote
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Issue 11, item 1: one failed authentication from each of 150,000 addresses used to
// fill the in-process limiter with 30-minute lockout entries, after which every new
// client got 429 on every route. Now every flood request is a plain 401, the flood
// leaves no lockout state, and a new client's /healthz, verify and authenticated
// requests succeed — with the in-process tables (on a frozen clock, so that nothing
// the flood left expires) and with Redis (a tenth of the flood: redisFloodAddrs).
func TestFailedAuthFloodDoesNotDenyService(t *testing.T) {
	type backend struct {
		limiter ratelimit.Limiter
		// lockouts counts the lockout entries the backend holds.
		lockouts func(t *testing.T, s *Server) int
	}
	if floodAddrs <= ratelimit.DefaultMaxKeys {
		t.Fatalf("a flood of %d addresses does not pass the in-process table's bound of %d", floodAddrs, ratelimit.DefaultMaxKeys)
	}
	for _, tc := range []struct {
		name    string
		addrs   int
		workers int // Redis round trips overlap
		backend func(t *testing.T) backend
	}{
		{"local", floodAddrs, 2, func(*testing.T) backend {
			return backend{lockouts: func(t *testing.T, s *Server) int {
				return s.limits.lockout.lim.(*ratelimit.Local).Len()
			}}
		}},
		{"redis", redisFloodAddrs, 16, func(t *testing.T) backend {
			rc, prefix := testRedis(t), testPrefixAPI()
			return backend{limiter: ratelimit.NewRedis(rc, prefix), lockouts: func(t *testing.T, _ *Server) int {
				keys, err := rc.Keys(t.Context(), "rate:"+prefix+"lockout:*").Result()
				if err != nil {
					t.Fatal(err)
				}
				return len(keys)
			}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := tc.backend(t)
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			fake := newFake(t)
			log := logrus.New()
			log.SetOutput(io.Discard)
			log.SetLevel(logrus.ErrorLevel)
			s, err := New(Config{TrustDomain: "example.org"}, Deps{
				Lifecycle: fake, Auth: fake, Admin: fake, Log: fakeLog{}, Revocation: fakeLog{},
				Limiter: be.limiter, Now: clk.Now,
			}, logrus.NewEntry(log))
			if err != nil {
				t.Fatal(err)
			}
			h := s.Handler()

			workers := tc.workers
			var (
				mu     sync.Mutex
				status = map[int]int{}
				wg     sync.WaitGroup
			)
			for w := range workers {
				wg.Go(func() {
					got := map[int]int{}
					for i := w; i < tc.addrs; i += workers {
						rec := serve(h, "GET", "/v1/agents", floodAddr(i), fmt.Sprintf("atr_guess_%032d", i), nil)
						got[rec.Code]++
					}
					mu.Lock()
					defer mu.Unlock()
					for c, n := range got {
						status[c] += n
					}
				})
			}
			wg.Wait()
			if status[http.StatusUnauthorized] != tc.addrs {
				t.Errorf("flood answers by status: %v; want all %d to be 401", status, tc.addrs)
			}

			newcomer := "203.0.113.7:5555"
			for _, c := range []struct {
				name, method, path, key string
				body                    any
			}{
				{"healthz", "GET", "/healthz", "", nil},
				{"verify", "POST", "/v1/verify", "", map[string]string{"certificate": string(fake.bundle)}},
				{"authenticated", "GET", "/v1/agents", keyAlice, nil},
			} {
				if rec := serve(h, c.method, c.path, newcomer, c.key, c.body); rec.Code != http.StatusOK {
					t.Errorf("new client %s: got %d %s, want 200", c.name, rec.Code, rec.Body)
				}
			}

			// A flood address keeps its own short window: it is not locked out, and its
			// valid key still works.
			if rec := serve(h, "GET", "/v1/agents", floodAddr(7), keyBob, nil); rec.Code != http.StatusOK {
				t.Errorf("flood address with a valid key: got %d %s, want 200", rec.Code, rec.Body)
			}

			m := serve(h, "GET", "/metrics", newcomer, "", nil).Body.String()
			if got := grep(m, "atr_ratelimit_rejections_total{"); got != "" {
				t.Errorf("the flood caused rate-limit rejections:\n%s", got)
			}
			if got := grep(m, `atr_ratelimit_table_full_total{table="lockout"}`); got != "" {
				t.Errorf("the flood filled the lockout table:\n%s", got)
			}
			if n := be.lockouts(t, s); n != 0 {
				t.Errorf("one failure per address left %d lockout entries, want 0", n)
			}
		})
	}
}

// testPrefixAPI returns a fresh Redis key prefix so that test runs never share buckets.
func testPrefixAPI() string {
	return fmt.Sprintf("atrtest:flood:%d:", time.Now().UnixNano())
}

// Issue 11, item 8: the class label of atr_ratelimit_rejections_total is the class name
// of ATR_RATE_LIMITS (per-ip, not ip; per-key, not key; auth-failure and lockout, not
// auth_lockout). Each case lowers one limit to 1 and trips it.
func TestRateLimitRejectionClassLabels(t *testing.T) {
	once := ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}
	bad := "atr_guess_00000000000000000000000000000000"
	type req struct{ method, path, key string }
	for _, tc := range []struct {
		class string
		set   func(*RateLimits)
		reqs  []req // the last one must be refused with 429
		wait  time.Duration
	}{
		{ClassPerIP, func(rl *RateLimits) { rl.PerIP = once }, []req{{"GET", "/v1/agents/x.alice", keyAlice}, {"GET", "/v1/agents/x.alice", keyAlice}}, 0},
		{ClassPublic, func(rl *RateLimits) { rl.Public = once }, []req{{"GET", "/healthz", ""}, {"GET", "/healthz", ""}}, 0},
		{ClassPerKey, func(rl *RateLimits) { rl.PerKey = once }, []req{{"GET", "/v1/agents/x.alice", keyAlice}, {"GET", "/v1/agents/x.alice", keyAlice}}, 0},
		{ClassList, func(rl *RateLimits) { rl.List = once }, []req{{"GET", "/v1/agents", keyAlice}, {"GET", "/v1/agents", keyAlice}}, 0},
		{ClassRegister, func(rl *RateLimits) { rl.Register = once }, []req{{"POST", "/v1/agents", keyAlice}, {"POST", "/v1/agents", keyAlice}}, 0},
		{ClassRotate, func(rl *RateLimits) { rl.Rotate = once }, []req{{"POST", "/v1/agents/x.alice/rotate", keyAlice}, {"POST", "/v1/agents/x.alice/rotate", keyAlice}}, 0},
		{ClassRevoke, func(rl *RateLimits) { rl.Revoke = once }, []req{{"POST", "/v1/agents/x.alice/revoke", keyAlice}, {"POST", "/v1/agents/x.alice/revoke", keyAlice}}, 0},
		{ClassAuthFailure, func(rl *RateLimits) { rl.AuthFailure = once }, []req{{"GET", "/v1/agents", bad}, {"GET", "/v1/agents", keyAlice}}, 0},
		// One failure spends a one-per-minute window and, with a threshold of 1, locks
		// out; a minute later the window is back and the lockout refuses.
		{ClassLockout, func(rl *RateLimits) {
			rl.AuthFailure, rl.LockoutThreshold = ratelimit.PerMinute(1), 1
		}, []req{{"GET", "/v1/agents", bad}, {"GET", "/v1/agents", keyAlice}}, 61 * time.Second},
	} {
		t.Run(tc.class, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			h := newHarness(t, func(c *Config, d *Deps) { tc.set(&c.RateLimits); d.Now = clk.Now })
			var last reply
			for i, r := range tc.reqs {
				if i == len(tc.reqs)-1 {
					clk.Advance(tc.wait)
				}
				last = h.do(r.method, r.path, r.key, map[string]string{})
			}
			if last.status != http.StatusTooManyRequests {
				t.Fatalf("last request: got %d %s, want 429", last.status, last.body)
			}
			rec := httptest.NewRecorder() // not through /metrics: it is rate limited too
			h.s.metrics.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			got := grep(rec.Body.String(), "atr_ratelimit_rejections_total{")
			want := fmt.Sprintf(`atr_ratelimit_rejections_total{class=%q} 1`, tc.class)
			if got != want {
				t.Errorf("rejection series:\n%s\nwant:\n%s", got, want)
			}
		})
	}
	// Every label is a class of ATR_RATE_LIMITS, or lockout.
	for _, c := range []string{ClassPerIP, ClassPublic, ClassPerKey, ClassList, ClassRegister, ClassRotate, ClassRevoke, ClassAuthFailure} {
		if !slices.Contains(RateLimitClassNames(), c) {
			t.Errorf("class %q is not a name of ATR_RATE_LIMITS", c)
		}
	}
}

// A full in-process table is counted under atr_ratelimit_table_full_total{table}, never
// as a rejection, and only the table that is full is affected: a full client table
// admits a new address, a full principal table answers 503 (not 429), a full lockout
// table leaves a new address to its auth-failure window.
func TestRateLimitTableFull(t *testing.T) {
	type step struct {
		ip, key    string
		wantStatus int
	}
	bad := "atr_guess_00000000000000000000000000000000"
	for _, tc := range []struct {
		table string
		set   func(*RateLimits)
		steps []step
	}{
		{tableClient, nil, []step{
			{"192.0.2.1", "", 200}, {"192.0.2.2", "", 200}, {"192.0.2.3", "", 200},
		}},
		// 404 (there is no agent x.alice): past every limit.
		{tablePrincipal, nil, []step{
			{"192.0.2.1", keyAlice, 404}, {"192.0.2.1", keyBob, 503}, {"192.0.2.1", keyAlice, 404},
		}},
		// A one-failure window: every failure spends it.
		{tableLockout, func(rl *RateLimits) { rl.AuthFailure = ratelimit.PerMinute(1) }, []step{
			{"192.0.2.1", bad, 401}, {"192.0.2.2", bad, 401}, {"192.0.2.2", keyBob, 429},
		}},
	} {
		t.Run(tc.table, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			h := newHarness(t, func(c *Config, d *Deps) {
				if tc.set != nil {
					tc.set(&c.RateLimits)
				}
				d.Now = clk.Now
			})
			tiny := limitTable{tc.table, ratelimit.NewLocal(1, ratelimit.EvictNearest, clk.Now)}
			switch tc.table {
			case tableClient:
				h.s.limits.client = tiny
			case tablePrincipal:
				tiny.lim = ratelimit.NewLocal(1, ratelimit.RefuseNew, clk.Now)
				h.s.limits.principal = tiny
			case tableLockout:
				tiny.lim = ratelimit.NewLocal(1, ratelimit.RefuseNew, clk.Now)
				h.s.limits.lockout = tiny
			}
			for i, st := range tc.steps {
				path := "/healthz"
				if st.key != "" {
					path = "/v1/agents/x.alice"
				}
				rec := serve(h.s.Handler(), "GET", path, st.ip+":1234", st.key, nil)
				if rec.Code != st.wantStatus {
					t.Errorf("step %d (%s): got %d %s, want %d", i, st.ip, rec.Code, rec.Body, st.wantStatus)
				}
			}
			rec := httptest.NewRecorder()
			h.s.metrics.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			m := rec.Body.String()
			if !strings.Contains(m, fmt.Sprintf("atr_ratelimit_table_full_total{table=%q}", tc.table)) {
				t.Errorf("no table-full count for %s:\n%s", tc.table, grep(m, "atr_ratelimit_"))
			}
			if tc.table != tableLockout {
				if got := grep(m, "atr_ratelimit_rejections_total{"); got != "" {
					t.Errorf("a full table counted as a rejection:\n%s", got)
				}
			}
		})
	}
}
