// With cgo (the "cgo" build variant), each call also spends -cgo in a C function: goprobe must
// show that time as cgo, not as a system call.

//go:build cgo

package main

/*
#include <unistd.h>
static void goprobe_c_wait(int us) { usleep(us); }
*/
import "C"

import "time"

const hasCgo = true

func cWait(d time.Duration) { C.goprobe_c_wait(C.int(d.Microseconds())) }
