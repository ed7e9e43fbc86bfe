//go:build wasip1

package traptor

// The canonical ABI of traptor:plugin@0.2.0, by hand: the exports a
// component of this module has, the memory the host writes a batch into,
// and the results read back. Nothing here is for plugin authors.

import (
	"bytes"
	"strings"
	"unsafe"
)

// Memory the host asks for (cabi_realloc: a batch's lists, a config string)
// is not Go's heap: an import may not be called from cabi_realloc (the
// component model traps: "cannot leave component instance"), and Go's
// allocator reads the clock, an import, when the heap grows. So it comes
// from chunks of linear memory taken from the runtime's sbrk (the runtime
// never hands them out again, the collector never looks at them), handed out
// by a bump pointer and reused call after call: they grow to the largest
// call seen. Building needs -ldflags=-checklinkname=0 (plugin build passes it).
type chunk struct {
	base uintptr
	size int
}

var (
	chunks  [64]chunk // static: cabi_realloc allocates nothing on Go's heap
	nchunks int
	cur     int // the chunk being handed out
	used    int // bytes handed out of chunks[cur]
	empty   [1]uint64
)

//go:linkname sbrk runtime.sbrk
func sbrk(n uintptr) unsafe.Pointer

func bump(size, align uint32) unsafe.Pointer {
	for ; cur < nchunks; cur, used = cur+1, 0 {
		c := chunks[cur]
		off := int((c.base+uintptr(used)+uintptr(align)-1)&^(uintptr(align)-1) - c.base)
		if off+int(size) <= c.size {
			used = off + int(size)
			return unsafe.Pointer(c.base + uintptr(off))
		}
	}
	if nchunks == len(chunks) {
		panic("traptor: out of memory (64 allocation chunks in use)")
	}
	// Chunks grow 1, 2, 4, 8, then 16 MiB (or the size asked): few chunks,
	// and never a large request the memory limit refuses for nothing.
	n := (max(int(size), 1<<(20+min(nchunks, 4))) + 0xFFFF) &^ 0xFFFF
	p := sbrk(uintptr(n))
	if p == nil {
		// Never hand the host address 0 to write a batch at: trap (the
		// host reports the stage out of memory).
		panic("traptor: out of memory")
	}
	chunks[nchunks] = chunk{uintptr(p), n}
	nchunks++
	cur, used = nchunks-1, int(size)
	return p
}

// Before the Go runtime is up (during _initialize) the WASI adapter asks for
// its state through cabi_realloc too, when not even sbrk may be used: it
// gets memory from this static block instead.
var (
	early     [256 << 10]byte
	earlyUsed uintptr
	ready     bool
)

func init() { ready = true } // package initialisers run once the runtime is up

//go:nosplit
func earlyAlloc(size, align uint32) unsafe.Pointer {
	base := uintptr(unsafe.Pointer(&early[0]))
	off := (base+earlyUsed+uintptr(align)-1)&^(uintptr(align)-1) - base
	if off+uintptr(size) > uintptr(len(early)) {
		panic("traptor: out of start-up memory")
	}
	earlyUsed = off + uintptr(size)
	return unsafe.Pointer(&early[off])
}

//go:wasmexport cabi_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	if newSize == 0 {
		return unsafe.Pointer(&empty[0])
	}
	if !ready {
		return earlyAlloc(newSize, align)
	}
	p := bump(newSize, max(align, 1))
	if old != nil && oldSize > 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), min(oldSize, newSize)))
	}
	return p
}

// After a call: every chunk is free again.
func unpin() { cur, used = 0, 0 }

func bytesAt(p unsafe.Pointer, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p), n)
}

func ptr(s string) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s)))) }

var described Description // kept alive while the host reads it
var describeRet [10]uint32

//go:wasmexport traptor:plugin/stage@0.2.0#describe
func abiDescribe() unsafe.Pointer {
	if registered == nil {
		panic("traptor: no stage registered: call traptor.Register(…) from an init function")
	}
	d := registered.Describe()
	d.Name, d.Version = valid(d.Name), valid(d.Version)
	d.Summary, d.ConfigSchema = valid(d.Summary), valid(d.ConfigSchema)
	described = d
	r := &describeRet
	r[0], r[1] = ptr(d.Name), uint32(len(d.Name))
	r[2], r[3] = ptr(d.Version), uint32(len(d.Version))
	r[4] = uint32(d.Kind)
	r[5], r[6] = ptr(d.Summary), uint32(len(d.Summary))
	r[7], r[8] = ptr(d.ConfigSchema), uint32(len(d.ConfigSchema))
	r[9] = uint32(d.Reads)
	return unsafe.Pointer(r)
}

var initErr string
var initRet [3]uint32

//go:wasmexport traptor:plugin/stage@0.2.0#init
func abiInit(config unsafe.Pointer, n uint32) unsafe.Pointer {
	text := bytesAt(config, n)
	if len(text) == 0 {
		text = []byte("{}")
	}
	// The config's memory is reused by the next call: the stage gets a copy.
	fields, err := registered.Init(bytes.Clone(text))
	unpin()
	r := &initRet
	if err != nil {
		initErr = valid(err.Error())
		r[0], r[1], r[2] = 1, ptr(initErr), uint32(len(initErr))
	} else {
		r[0], r[1] = 0, uint32(fields)
		reads = fields
	}
	return unsafe.Pointer(r)
}

var reads Fields

type changeRec struct {
	post   uint32
	action uint8
	_      [3]uint8
	text   span
}

var (
	resData    []byte
	resChanges []changeRec
	processRet [4]uint32
	current    batch
)

//go:wasmexport traptor:plugin/stage@0.2.0#process
func abiProcess(count uint32, data unsafe.Pointer, dataLen uint32, posts unsafe.Pointer, postsLen uint32,
	strs unsafe.Pointer, strsLen uint32, refs unsafe.Pointer, refsLen uint32, rules unsafe.Pointer, rulesLen uint32) unsafe.Pointer {
	b := &current
	b.count, b.reads = count, reads
	b.data = bytesAt(data, dataLen)
	b.posts = unsafe.Slice((*postRec)(posts), postsLen)
	b.strings = unsafe.Slice((*span)(strs), strsLen)
	b.refs = unsafe.Slice((*uint32)(refs), refsLen)
	b.rules = unsafe.Slice((*ruleRec)(rules), rulesLen)
	resData, resChanges = resData[:0], resChanges[:0]
	for i := 0; i < int(count); i++ {
		o := processOne(Post{b, i})
		if o.action == keep {
			continue
		}
		start := uint32(len(resData))
		resData = append(resData, o.text...)
		resChanges = append(resChanges, changeRec{post: uint32(i), action: uint8(o.action) - 1, text: span{start, uint32(len(o.text))}})
	}
	*b = batch{}
	unpin()
	r := &processRet
	r[0], r[1] = 0, uint32(len(resData))
	if len(resData) > 0 {
		r[0] = uint32(uintptr(unsafe.Pointer(&resData[0])))
	}
	r[2], r[3] = 0, uint32(len(resChanges))
	if len(resChanges) > 0 {
		r[2] = uint32(uintptr(unsafe.Pointer(&resChanges[0])))
	}
	return unsafe.Pointer(r)
}

//go:wasmimport traptor:plugin/host@0.2.0 log
func hostLog(level uint32, msg unsafe.Pointer, msgLen uint32, fields unsafe.Pointer, fieldsLen uint32)

//go:wasmimport traptor:plugin/host@0.2.0 counter
func hostCounter(name unsafe.Pointer, nameLen uint32, delta uint64)

func logRecord(level Level, message string, kv []string) {
	message = valid(message)
	kv = append([]string(nil), kv...)
	pairs := make([]uint32, 0, len(kv)/2*4)
	for i := 0; i+1 < len(kv); i += 2 {
		kv[i], kv[i+1] = valid(kv[i]), valid(kv[i+1])
		pairs = append(pairs, ptr(kv[i]), uint32(len(kv[i])), ptr(kv[i+1]), uint32(len(kv[i+1])))
	}
	level = min(level, Error)
	var fp unsafe.Pointer
	if len(pairs) > 0 {
		fp = unsafe.Pointer(&pairs[0])
	}
	hostLog(uint32(level), unsafe.Pointer(unsafe.StringData(message)), uint32(len(message)), fp, uint32(len(pairs)/4))
}

func addCounter(name string, delta uint64) {
	name = valid(name)
	hostCounter(unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)), delta)
}

// valid is s with any invalid UTF-8 replaced (a WIT string must be UTF-8,
// or the host traps the call: a log line cut at a byte count would do it).
func valid(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
