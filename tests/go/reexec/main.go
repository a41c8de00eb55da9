// reexec replaces itself with a new run of its own binary, in place, several times: the PID
// stays, the program starts over. Each image does its start-up work (-startup, standing for
// reading a config), calls main.goprobeE2EReexec -n times from a few goroutines, then execs the
// next image; the last one prints the ground truth for all of them. An exec is a new process:
// goprobe must trace each image from its start, keyed apart from the image before.
package main

import (
	"flag"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EReexec is the traced function. noinline keeps it a real function with its own
// symbol and RET instructions; calling reexecMix keeps it from being a leaf.
//
//go:noinline
func goprobeE2EReexec(i int) int {
	x := i*7 + 3
	return reexecMix(x) ^ (x >> 2)
}

//go:noinline
func reexecMix(x int) int {
	return x*31 + x>>3
}

func main() {
	images := flag.Int("images", 3, "how many images run in turn (the first one included)")
	n := flag.Int("n", 1500, "calls of goprobeE2EReexec per image")
	goroutines := flag.Int("goroutines", 4, "goroutines that share each image's calls")
	startup := flag.Duration("startup", 30*time.Millisecond, "start-up work of each image before its first call")
	image := flag.Int("image", 1, "which image this is (set by the image before)")
	harness.Start()
	time.Sleep(*startup)
	var wg sync.WaitGroup
	per := *n / *goroutines
	for w := 0; w < *goroutines; w++ {
		calls := per
		if w == 0 {
			calls += *n - per**goroutines
		}
		wg.Add(1)
		go func(calls int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				goprobeE2EReexec(i)
				if i%100 == 99 {
					time.Sleep(time.Millisecond)
				}
			}
		}(calls)
	}
	wg.Wait()
	if *image < *images {
		self, err := os.Executable()
		if err != nil {
			harness.Fail("os.Executable: %v", err)
		}
		args := []string{os.Args[0], "-nowait",
			"-images", strconv.Itoa(*images), "-n", strconv.Itoa(*n),
			"-goroutines", strconv.Itoa(*goroutines), "-startup", startup.String(),
			"-image", strconv.Itoa(*image + 1)}
		err = syscall.Exec(self, args, os.Environ())
		harness.Fail("exec %s: %v", self, err)
	}
	harness.Result(struct {
		Calls  int `json:"calls"`
		Images int `json:"images"`
		PID    int `json:"pid"`
	}{*images * *n, *images, os.Getpid()})
}
