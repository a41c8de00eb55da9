// gosymref lists the functions of a Go binary using only Go's own debug/elf and debug/gosym,
// as the reference that goprobe's pclntab reader is tested against.
//
// Output: one line per function, "name<TAB>0xentry<TAB>0xend", in table order. A line on
// stderr says which runtime.text address was used and where it came from.
//
// Build it with a Go toolchain at least as new as the binaries it reads: debug/gosym only
// knows the pclntab layouts of its own and earlier versions.
package main

import (
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strconv"
)

func main() {
	textFlag := flag.String("text", "", "use this runtime.text address (hex) instead of looking it up")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: gosymref [-text 0xADDR] BINARY")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *textFlag); err != nil {
		fmt.Fprintln(os.Stderr, "gosymref:", err)
		os.Exit(1)
	}
}

func run(path, textFlag string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	// Symbols are optional: stripped binaries have none.
	syms, _ := f.Symbols()
	symbol := func(name string) (elf.Symbol, bool) {
		for _, s := range syms {
			if s.Name == name {
				return s, true
			}
		}
		return elf.Symbol{}, false
	}

	// The pclntab: its own section (".data.rel.ro.gopclntab" in PIE builds), else the
	// runtime.pclntab..runtime.epclntab symbol range, as cmd/internal/objfile does.
	var pcln []byte
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		if s := f.Section(name); s != nil {
			if pcln, err = s.Data(); err != nil {
				return fmt.Errorf("reading %s: %v", name, err)
			}
			break
		}
	}
	if pcln == nil {
		start, ok1 := symbol("runtime.pclntab")
		end, ok2 := symbol("runtime.epclntab")
		if !ok1 || !ok2 {
			return fmt.Errorf("no .gopclntab section and no runtime.pclntab symbol")
		}
		if pcln, err = readVaddr(f, start.Value, end.Value-start.Value); err != nil {
			return err
		}
	}

	// runtime.text: the flag, the symbol, the 1.18+ header field when stored (it is 0 in
	// newer Go), else the .text section address (wrong for externally linked cgo binaries,
	// whose .text starts with C code; callers pass -text for those).
	var text uint64
	var source string
	switch {
	case textFlag != "":
		if text, err = strconv.ParseUint(textFlag, 0, 64); err != nil {
			return fmt.Errorf("bad -text: %v", err)
		}
		source = "flag"
	default:
		if s, ok := symbol("runtime.text"); ok {
			text, source = s.Value, "symtab"
		} else if t := headerTextStart(pcln); t != 0 {
			text, source = t, "header"
		} else if s := f.Section(".text"); s != nil {
			text, source = s.Addr, "section"
		} else {
			return fmt.Errorf("cannot find runtime.text")
		}
	}
	fmt.Fprintf(os.Stderr, "gosymref: text %#x from %s\n", text, source)

	tab, err := gosym.NewTable(nil, gosym.NewLineTable(pcln, text))
	if err != nil {
		return err
	}
	if len(tab.Funcs) == 0 {
		return fmt.Errorf("no functions in the pclntab (format unknown to this Go version?)")
	}
	w := os.Stdout
	for _, fn := range tab.Funcs {
		fmt.Fprintf(w, "%s\t%#x\t%#x\n", fn.Name, fn.Entry, fn.End)
	}
	return nil
}

// headerTextStart returns the textStart word of a Go 1.18+ little-endian pclntab header.
func headerTextStart(pcln []byte) uint64 {
	if len(pcln) < 8 {
		return 0
	}
	magic := binary.LittleEndian.Uint32(pcln)
	if magic != 0xfffffff0 && magic != 0xfffffff1 {
		return 0
	}
	ptr := int(pcln[7])
	if ptr != 8 || len(pcln) < 8+3*ptr {
		return 0
	}
	return binary.LittleEndian.Uint64(pcln[8+2*ptr:])
}

func readVaddr(f *elf.File, addr, size uint64) ([]byte, error) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr+size <= p.Vaddr+p.Filesz {
			b := make([]byte, size)
			_, err := p.ReadAt(b, int64(addr-p.Vaddr))
			return b, err
		}
	}
	return nil, fmt.Errorf("address %#x not in a loadable segment", addr)
}
