package main

// goprobeBenchAsm is in bench_amd64.s (bench_other.go has a stand-in for other architectures).
func goprobeBenchAsm(x int) int
