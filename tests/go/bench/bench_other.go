//go:build !amd64

package main

// goprobeBenchAsm: the instruction-class function exists only for amd64 (bench_amd64.s).
func goprobeBenchAsm(x int) int { return 3*x + 4 }
