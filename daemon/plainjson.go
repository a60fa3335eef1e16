package daemon

import (
	"maps"
	"slices"
	"unicode/utf8"
)

// keyValuesJSONMaxLen bounds the length of appendKeyValuesJSON's output:
// every byte of a key or value takes at most 6 bytes ("\u001f"), plus
// quotes, ':' and ',' per entry and the braces.
func keyValuesJSONMaxLen(kvs map[string]string) int {
	n := 2
	for k, v := range kvs {
		n += 6*(len(k)+len(v)) + 6
	}
	return n
}

// appendKeyValuesJSON appends kvs as a JSON object with sorted keys,
// without the intermediate buffers of encoding/json. dst must have room
// for keyValuesJSONMaxLen(kvs) more bytes, so that append never copies it.
func appendKeyValuesJSON(dst []byte, kvs map[string]string) []byte {
	dst = append(dst, '{')
	for i, k := range slices.Sorted(maps.Keys(kvs)) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendJSONString(dst, kvs[k])
	}
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string: '"' and '\' escaped,
// control characters as \u00XX, invalid UTF-8 as U+FFFD (as encoding/json
// does), everything else as it is.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return append(dst, '"')
}
