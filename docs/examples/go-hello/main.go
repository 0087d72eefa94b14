// Command hello prints a greeting and where it was built from.
package main

import (
	"fmt"
	"runtime"
)

func main() {
	_, file, _, _ := runtime.Caller(0)
	fmt.Printf("hello from %s\n", file) // -trimpath: no build directory in the binary
}
