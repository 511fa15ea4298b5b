package mattermost

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

// decodeAnswer reads answers as encoding/json did before it: the same
// values, and the same answers refused. Leniency changes here would change
// which servers pass as Mattermost.
func TestDecodeAnswerReadsAsEncodingJSON(t *testing.T) {
	type user struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Email    string `json:"email"`
		IsBot    bool   `json:"is_bot"`
	}
	bodies := map[string]string{
		"upper-case names":         `{"ID":"b95oboh88frobdioocwwdoqhdc","UserName":"alice","EMAIL":"a@example.com","Is_Bot":true}`,
		"a repeated name":          `{"id":"b95oboh88frobdioocwwdoqhdc","username":"first","username":"last"}`,
		"bytes that are not UTF-8": "{\"id\":\"b95oboh88frobdioocwwdoqhdc\",\"username\":\"al\xffice\",\"props\":{\"x\":\"\xfe\"}}",
		"unknown members":          `{"id":"b95oboh88frobdioocwwdoqhdc","username":"alice","notify_props":{"email":"true"},"timezone":{}}`,
		"a wrong type":             `{"id":"b95oboh88frobdioocwwdoqhdc","username":7}`,
		"not an object":            `["b95oboh88frobdioocwwdoqhdc"]`,
		"text after the value":     `{"id":"b95oboh88frobdioocwwdoqhdc"} {}`,
		"cut short":                `{"id":"b95oboh88frobdioocwwdoqhdc","username":"al`,
		"empty":                    ``,
		"html":                     `<html><body>Mattermost</body></html>`,
	}
	for _, name := range []string{"05-users-me-valid-bearer", "26-users-me-bot", "15-users-me-revoked-token", "11-users-me-sessions-with-pat"} {
		bodies["capture "+name] = string(mattermosttest.LoadCapture(name).Body)
	}
	for name, body := range bodies {
		for _, dst := range []func() any{
			func() any { return new(user) },
			func() any { return new(apiError) },
			func() any { return new([]session) },
		} {
			want, got := dst(), dst()
			wantErr := json.Unmarshal([]byte(body), want)
			gotErr := decodeAnswer([]byte(body), got)
			if (wantErr == nil) != (gotErr == nil) {
				t.Errorf("%s into %T: encoding/json err = %v, decodeAnswer err = %v", name, want, wantErr, gotErr)
				continue
			}
			if wantErr == nil && !reflect.DeepEqual(want, got) {
				t.Errorf("%s into %T: encoding/json read %+v, decodeAnswer read %+v", name, want, want, got)
			}
		}
	}
}

// BenchmarkDecodeAnswer: the two answers every create decodes, read by
// encoding/json (as before) and by decodeAnswer.
func BenchmarkDecodeAnswer(b *testing.B) {
	type user struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Email    string `json:"email"`
		IsBot    bool   `json:"is_bot"`
	}
	for _, tc := range []struct {
		capture string
		dst     func() any
	}{
		{"05-users-me-valid-bearer", func() any { return new(user) }},
		{"11-users-me-sessions-with-pat", func() any { return new([]session) }},
	} {
		body := mattermosttest.LoadCapture(tc.capture).Body
		for name, decode := range map[string]func([]byte, any) error{"encoding-json": json.Unmarshal, "decodeAnswer": decodeAnswer} {
			b.Run(tc.capture+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := decode(body, tc.dst()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
