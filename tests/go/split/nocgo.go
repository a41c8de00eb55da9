//go:build !cgo

package main

import "time"

const hasCgo = false

func cWait(time.Duration) {}
