// Renders an Ollama TEMPLATE with Go's text/template, filling the data the way Ollama's chat
// endpoint does, so tests can compare it with the Jinja rendering.
//
// stdin: {"template": "...", "messages": [{"role": "...", "content": "..."}], "system": "..."}
// where "system" is the Modelfile's SYSTEM (used when the chat does not start with a system
// message). stdout: the rendered prompt. Parse and execution errors go to stderr, exit code 1.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type request struct {
	Template string    `json:"template"`
	Messages []message `json:"messages"`
	System   string    `json:"system"`
}

// withModelfileSystem puts the Modelfile's SYSTEM first unless the chat brings its own.
func withModelfileSystem(msgs []message, system string) []message {
	if system == "" || (len(msgs) > 0 && msgs[0].Role == "system") {
		return msgs
	}
	return append([]message{{Role: "system", Content: system}}, msgs...)
}

// merge joins every system message into one string and merges runs of one role (tool excepted)
// with a blank line between them; system messages stay in the list.
func merge(msgs []message) (string, []*message) {
	var systems []string
	var merged []*message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if n := len(merged); n > 0 && merged[n-1].Role == m.Role && m.Role != "tool" {
			merged[n-1].Content += "\n\n" + m.Content
			continue
		}
		merged = append(merged, &m)
	}
	return strings.Join(systems, "\n\n"), merged
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(1)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	system, msgs := merge(withModelfileSystem(req.Messages, req.System))
	data := map[string]any{"System": system, "Messages": msgs, "Tools": nil, "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
}
