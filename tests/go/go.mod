module goprobe.test/progs

go 1.19

require github.com/goprobe-e2e/shapes/v2 v2.0.0

// A local module with a github.com-style, major-version path: see shapes-lib/counter.go.
replace github.com/goprobe-e2e/shapes/v2 => ./shapes-lib
