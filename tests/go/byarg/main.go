// byarg calls functions whose latency goprobe breaks down by argument (`funclatency --by`, the
// http-server and http-client packs), with known counts per value:
//
//   - main.goprobeE2ELookup(key string, n int, hit bool) with keys "alpha" and "beta", a key
//     longer than goprobe keeps (cut, and said so), and a key whose pointer is unmapped (its
//     bytes cannot be read: goprobe must count the call as unreadable, and the program runs on);
//   - with -late N, N more lookups of key "gamma" after all of that, over a second or more
//     (a value that becomes the most called after others took the rows: the agent's top-K);
//   - main.goprobeE2EFetch(key string) (int, error), whose error is nil for "hit" and not for
//     "miss" (results, read at the RET);
//   - an HTTP server on 127.0.0.1 with three routes of known latency and status (/fast 1 ms
//     200 without writing a status, /mid 5 ms 404, /slow 20 ms 503), which the program itself
//     requests -req times each, from -c clients (-mid-ms makes /mid slower: a route that
//     got slower, for the agent's diff by label).
//
// The ground truth line has the count per key, per fetch result and per route.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"goprobe.test/progs/internal/harness"
)

//go:noinline
func goprobeE2ELookup(key string, n int, hit bool) int {
	time.Sleep(time.Duration(n) * time.Microsecond)
	if hit {
		return n + 1
	}
	return n
}

var errMiss = errors.New("miss")

//go:noinline
func goprobeE2EFetch(key string) (int, error) {
	time.Sleep(20 * time.Microsecond)
	if key == "miss" {
		return -1, errMiss
	}
	return len(key), nil
}

func outcome(err error) string {
	if err != nil {
		return "non-nil"
	}
	return "nil"
}

// unmapped is a string whose bytes are at an address no mapping covers (the top of the lower
// half of the address space, above anything Go maps); the lookup never reads it.
func unmapped() string {
	header := struct {
		data uintptr
		len  int
	}{0x7ff0_0000_0000, 5}
	return *(*string)(unsafe.Pointer(&header))
}

var routes = []struct {
	path   string
	sleep  time.Duration
	status int
}{
	{"/fast", time.Millisecond, 200},
	{"/mid", 5 * time.Millisecond, 404},
	{"/slow", 20 * time.Millisecond, 503},
}

func main() {
	calls := flag.Int("calls", 200, "lookups per key")
	req := flag.Int("req", 100, "requests per route")
	clients := flag.Int("c", 4, "concurrent clients per route")
	late := flag.Int("late", 0, "lookups of \"gamma\" at the end, 1 ms each")
	midMs := flag.Int("mid-ms", 5, "milliseconds the /mid route takes")
	harness.Start()
	routes[1].sleep = time.Duration(*midMs) * time.Millisecond

	long := strings.Repeat("x", 300)
	keys := map[string]int{}
	fetched := map[string]int{}
	total := 0
	for i := 0; i < *calls; i++ {
		total += goprobeE2ELookup("alpha", 10, true)
		total += goprobeE2ELookup("beta", 50, false)
		keys["alpha"]++
		keys["beta"]++
		n, err := goprobeE2EFetch("hit")
		total += n
		fetched[outcome(err)]++
		if i%2 == 0 {
			_, err = goprobeE2EFetch("miss")
			fetched[outcome(err)]++
		}
		if i%10 == 0 {
			total += goprobeE2ELookup(long, 1, false)
			total += goprobeE2ELookup(unmapped(), 1, false)
			keys["long"]++
			keys["unmapped"]++
		}
	}

	// Each handler times itself: the p50 per route is ground truth for goprobe's.
	var mu sync.Mutex
	took := map[string][]time.Duration{}
	mux := http.NewServeMux()
	for _, r := range routes {
		sleep, path, status := r.sleep, r.path, r.status
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			start := time.Now()
			time.Sleep(sleep)
			if status != 200 {
				w.WriteHeader(status)
			}
			fmt.Fprintln(w, "ok")
			d := time.Since(start)
			mu.Lock()
			took[path] = append(took[path], d)
			mu.Unlock()
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		harness.Fail("listen: %v", err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	base := "http://" + ln.Addr().String()

	served := map[string]int{}
	var wg sync.WaitGroup
	for _, r := range routes {
		for c := 0; c < *clients; c++ {
			n := *req / *clients
			if c < *req%*clients {
				n++
			}
			wg.Add(1)
			go func(path string, status, n int) {
				defer wg.Done()
				for i := 0; i < n; i++ {
					resp, err := http.Get(base + path)
					if err != nil {
						harness.Fail("GET %s: %v", path, err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != status {
						harness.Fail("GET %s: status %d", path, resp.StatusCode)
					}
					mu.Lock()
					served[path]++
					mu.Unlock()
				}
			}(r.path, r.status, n)
		}
	}
	wg.Wait()
	srv.Close()
	p50 := map[string]int64{}
	for path, ds := range took {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p50[path] = int64(ds[len(ds)/2])
	}
	for i := 0; i < *late; i++ {
		total += goprobeE2ELookup("gamma", 1000, false)
		keys["gamma"]++
	}
	statuses := map[string]int{}
	for _, r := range routes {
		statuses[r.path] = r.status
	}
	harness.Result(map[string]interface{}{"keys": keys, "fetched": fetched, "routes": served, "statuses": statuses, "handler_p50_ns": p50, "total": total, "addr": ln.Addr().String()})
}
