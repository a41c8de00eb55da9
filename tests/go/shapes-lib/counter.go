// Package shapes stands for a third-party package with a major-version module path, so its
// functions have names like github.com/goprobe-e2e/shapes/v2.(*Counter).Add. The tests/go module
// requires it through a replace directive (no network needed).
package shapes

// Counter counts calls of Add.
type Counter struct{ n int }

// Add is traced by its full module-path name.
//
//go:noinline
func (c *Counter) Add(d int) int {
	c.n += d
	return c.n
}
