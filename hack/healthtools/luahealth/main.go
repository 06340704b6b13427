// luahealth runs an Argo CD resource health script (Lua) the way Argo CD's application
// controller does, on gopher-lua, without building Argo CD.
//
// What it reproduces of Argo CD (util/lua in argoproj/argo-cd v3, read for behaviour, not copied):
//   - a fresh gopher-lua state per object; unless -open-libs is given (Argo's `useOpenLibs`,
//     always on for the built-in scripts under resource_customizations/), no standard library
//     is opened except `package`, `base`, `table` and an `os` holding only `time` and `date`
//     (also reachable through require("os")): so no `string` and no `math`;
//   - the object as the global `obj`: JSON objects and arrays become tables, numbers LNumber;
//   - a 1 s limit per run; the script must return a table {status=..., message=...} whose
//     status is one of Healthy, Progressing, Degraded, Suspended, Missing, Unknown, else the
//     result is Unknown "Lua returned an invalid health status".
//
// Usage:
//
//	luahealth [-open-libs] -script health.lua < object.json   # prints {"status":…,"message":…}
//	luahealth [-open-libs] -test DIR   # DIR/health.lua against DIR/health_test.yaml, as Argo's
//	                                    # TestLuaHealthScript does (exact status and message)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// openArgoLibs opens what Argo CD opens for a script from argocd-cm: package, base, table and a
// reduced os (time and date only), the latter also preloaded for require("os").
func openArgoLibs(l *lua.LState) {
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	safeOs := reducedOs(l)
	l.SetGlobal(lua.OsLibName, safeOs)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(safeOs)
		return 1
	})
}

// reducedOs is gopher-lua's os library cut down to time and date: opened in a scratch state
// that is then dropped, so nothing else of os (execute, exit, getenv, remove…) is reachable.
func reducedOs(l *lua.LState) *lua.LTable {
	scratch := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer scratch.Close()
	scratch.Push(scratch.NewFunction(lua.OpenOs))
	scratch.Push(lua.LString(lua.OsLibName))
	scratch.Call(1, 0)
	full := scratch.GetGlobal(lua.OsLibName).(*lua.LTable)
	out := l.NewTable()
	for _, name := range []string{"time", "date"} {
		fn := full.RawGetString(name).(*lua.LFunction)
		out.RawSetString(name, l.NewFunction(fn.GFunction))
	}
	return out
}

// toLua converts a value decoded from JSON (numbers as json.Number) as Argo's decodeValue does
// for an unstructured object: maps and slices become tables, numbers LNumber.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return lua.LString(x)
		}
		return lua.LNumber(f)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func decodeJSON(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// run evaluates script on obj; an error is what Argo CD reports as health Unknown with the
// error as message.
func run(script string, obj map[string]any, openLibs bool) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	if !openLibs {
		openArgoLibs(l)
	} else {
		l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
			l.Push(l.GetGlobal(lua.OsLibName))
			return 1
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return health{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	var h health
	for field, dst := range map[string]*string{"status": &h.Status, "message": &h.Message} {
		switch v := ret.RawGetString(field).(type) {
		case *lua.LNilType:
		case lua.LString:
			*dst = string(v)
		default:
			return health{}, fmt.Errorf("%s is a %s, not a string", field, v.Type())
		}
	}
	if !validStatus[h.Status] {
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

type testFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus health `json:"healthStatus"`
	} `json:"tests"`
}

func runTests(dir string, openLibs bool) (int, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return 0, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, err
	}
	var tests testFile
	if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
		return 0, fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(tests.Tests) == 0 {
		return 0, errors.New("health_test.yaml lists no tests")
	}
	failed := 0
	for _, tc := range tests.Tests {
		input, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
		if err != nil {
			return 0, err
		}
		asJSON, err := yaml.YAMLToJSON(input)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", tc.InputPath, err)
		}
		obj, err := decodeJSON(asJSON)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", tc.InputPath, err)
		}
		got, err := run(string(script), obj, openLibs)
		if err != nil {
			got = health{Status: "Unknown", Message: err.Error()}
		}
		if got == tc.HealthStatus {
			fmt.Printf("PASS %s: %s %q\n", tc.InputPath, got.Status, got.Message)
		} else {
			failed++
			fmt.Printf("FAIL %s: want %s %q, got %s %q\n", tc.InputPath,
				tc.HealthStatus.Status, tc.HealthStatus.Message, got.Status, got.Message)
		}
	}
	fmt.Printf("%d passed, %d failed\n", len(tests.Tests)-failed, failed)
	return failed, nil
}

func main() {
	openLibs := flag.Bool("open-libs", false, "open every standard library (Argo's useOpenLibs)")
	scriptPath := flag.String("script", "", "health.lua to run on the object read from stdin")
	testDir := flag.String("test", "", "directory with health.lua and health_test.yaml")
	flag.Parse()
	switch {
	case *testDir != "":
		failed, err := runTests(*testDir, *openLibs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "luahealth:", err)
			os.Exit(2)
		}
		if failed > 0 {
			os.Exit(1)
		}
	case *scriptPath != "":
		script, err := os.ReadFile(*scriptPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "luahealth:", err)
			os.Exit(2)
		}
		input, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "luahealth:", err)
			os.Exit(2)
		}
		asJSON, err := yaml.YAMLToJSON(input) // JSON is YAML: either works
		if err != nil {
			fmt.Fprintln(os.Stderr, "luahealth:", err)
			os.Exit(2)
		}
		obj, err := decodeJSON(asJSON)
		if err != nil {
			fmt.Fprintln(os.Stderr, "luahealth:", err)
			os.Exit(2)
		}
		got, err := run(string(script), obj, *openLibs)
		if err != nil {
			got = health{Status: "Unknown", Message: err.Error()}
		}
		out, _ := json.Marshal(got)
		fmt.Println(string(out))
	default:
		fmt.Fprintln(os.Stderr, "usage: luahealth [-open-libs] (-test DIR | -script FILE < object)")
		os.Exit(2)
	}
}
