// Importing "C" makes this a cgo program when CGO_ENABLED=1, so the "cgo" build variant
// (-ldflags=-linkmode=external) really goes through the external linker and the C runtime.
// With CGO_ENABLED=0 the build constraint leaves this file out and the program is pure Go.

//go:build cgo

package main

import "C"
