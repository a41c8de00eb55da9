// shapes calls every kind of Go function a known number of times, so a test can trace each by
// the name the Go toolchain prints: methods on pointer and value receivers, a closure, a deferred
// function, a generic function's shape instantiation, a module-path package's method, and a
// runtime function (runtime.GC).
package main

import (
	"flag"
	"runtime"

	shapes "github.com/goprobe-e2e/shapes/v2"

	"goprobe.test/progs/internal/harness"
)

type goprobeE2EThing struct{ n int }

// Ptr is main.(*goprobeE2EThing).Ptr.
//
//go:noinline
func (t *goprobeE2EThing) Ptr(d int) int { t.n += d; return t.n }

// Val is main.goprobeE2EThing.Val.
//
//go:noinline
func (t goprobeE2EThing) Val(d int) int { return t.n + d }

// goprobeE2EGeneric is instantiated for int and string; the gc compiler emits one shape
// instantiation per shape, named main.goprobeE2EGeneric[go.shape.int] and so on.
//
//go:noinline
func goprobeE2EGeneric[T any](v T) T { return v }

// goprobeE2EDeferrer defers a closure: main.goprobeE2EDeferrer.func1.
//
//go:noinline
func goprobeE2EDeferrer(out *int) {
	defer func() { *out++ }()
	*out += 2
}

// goprobeE2EMakeClosure returns main.goprobeE2EMakeClosure.func1.
//
//go:noinline
func goprobeE2EMakeClosure(k int) func(int) int {
	return func(x int) int { return x*k + 1 }
}

func main() {
	n := flag.Int("n", 1000, "calls of each function")
	gcs := flag.Int("gcs", 5, "calls of runtime.GC")
	harness.Start()
	t := &goprobeE2EThing{}
	var c shapes.Counter
	f := goprobeE2EMakeClosure(3)
	deferred := 0
	sum := 0
	for i := 0; i < *n; i++ {
		sum += t.Ptr(1) + t.Val(i) + goprobeE2EGeneric(i) + len(goprobeE2EGeneric("x")) + f(i) + c.Add(1)
		goprobeE2EDeferrer(&deferred)
	}
	for i := 0; i < *gcs; i++ {
		runtime.GC()
	}
	if deferred != 3**n {
		harness.Fail("deferred closure ran %d times, want %d", deferred, 3**n)
	}
	harness.Result(struct {
		Calls    int `json:"calls"`
		Generic  int `json:"generic_calls"`
		Closures int `json:"closure_calls"`
		GCs      int `json:"gcs"`
		Sum      int `json:"sum"`
	}{*n, 2 * *n, *n, *gcs, sum})
}
