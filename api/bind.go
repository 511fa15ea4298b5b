package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// newValidator checks request bodies with the domain's field rules, the
// one source of them: each request type's struct-level rule reports every
// problem the domain finds, with the domain's code (as the tag) and
// message (as the param), so all of a body's problems come back at once.
func newValidator(allowHTTP bool) *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	report := func(sl validator.StructLevel, problems ...*connection.FieldError) {
		for _, fe := range problems {
			if fe != nil {
				sl.ReportError(nil, fe.Field, fe.Field, fe.Code, fe.Message)
			}
		}
	}
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		req := sl.Current().Interface().(createConnectionRequest)
		_, _, problems := connection.CheckConnectInput(connection.ConnectInput{
			ServerURL: req.ServerURL, Token: req.Token, EndUserID: req.EndUserID}, allowHTTP)
		for i := range problems {
			report(sl, &problems[i])
		}
	}, createConnectionRequest{})
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		req := sl.Current().Interface().(createSessionRequest)
		report(sl, connection.RequireEndUserID(req.EndUserID))
	}, createSessionRequest{})
	return v
}

// bindJSON decodes a JSON body strictly into dst and applies the domain's
// field rules: the body must be application/json, at most MaxBodyBytes of
// UTF-8, one object whose member names match exactly, each once, with only
// known fields of the right types and nothing after it. A field's string
// holding an escaped lone surrogate (\ud800) is that field's problem (422
// invalid_format), never silently replaced; one anywhere else is the
// body's (400 invalid_request).
func (s *Server) bindJSON(c echo.Context, dst any) error {
	req := c.Request()
	mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return &requestError{http.StatusUnsupportedMediaType, "unsupported_media_type", "Send the body as application/json."}
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	trimmed := bytes.TrimSpace(body)
	switch {
	case len(trimmed) == 0:
		return invalidRequest("The body is empty; send a JSON object.")
	case !utf8.Valid(body):
		return invalidRequest("The body is not valid JSON: it holds bytes that are not UTF-8 text.")
	case !jsontext.Value(trimmed).IsValid():
		if err := json.Unmarshal(body, dst, json.RejectUnknownMembers(true)); err != nil {
			return describeJSONError(err, dst)
		}
		return invalidRequest("The body is not valid JSON.")
	case trimmed[0] != '{':
		return invalidRequest("The body must be a JSON object, not " + kindName(jsontext.Value(trimmed).Kind()) + ".")
	}
	if err := json.Unmarshal(body, dst, json.RejectUnknownMembers(true)); err != nil {
		return describeJSONError(err, dst)
	}
	if err := s.validate.Struct(dst); err != nil {
		var ves validator.ValidationErrors
		if errors.As(err, &ves) {
			return toValidationError(ves)
		}
		return err
	}
	return nil
}

// readBody reads a request body of at most MaxBodyBytes. Errors: 413
// payload_too_large, 400 invalid_request.
func readBody(c echo.Context) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > MaxBodyBytes {
		return nil, tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge()
		}
		return nil, invalidRequest("The request body could not be read.")
	}
	return body, nil
}

func tooLarge() error {
	return &requestError{http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("The request body is larger than %d KiB.", MaxBodyBytes>>10)}
}

// describeJSONError says what is wrong with a body that did not decode
// into dst.
func describeJSONError(err error, dst any) error {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &syn):
		field := strings.TrimPrefix(string(syn.JSONPointer), "/")
		cause := ""
		if syn.Err != nil {
			cause = syn.Err.Error()
		}
		switch {
		case strings.HasPrefix(cause, "invalid surrogate pair") && isMemberOf(dst, field):
			return &connection.ValidationError{Fields: []connection.FieldError{{Field: field, Code: connection.FieldInvalidFormat,
				Message: field + " contains an escaped UTF-16 surrogate without its pair (such as \\ud800), which is not a character"}}}
		case strings.HasPrefix(cause, "invalid surrogate pair"):
			// Outside the request's fields (a bare string, an unknown or
			// nested member): not a field's problem, and no field to name.
			return invalidRequest(fmt.Sprintf("The body holds an escaped UTF-16 surrogate without its pair (such as \\ud800) at byte %d, which is not a character.", syn.ByteOffset))
		case strings.HasPrefix(cause, "duplicate object member name"):
			return invalidRequest("Field " + field + " is given more than once.")
		case cause == "unexpected EOF":
			return invalidRequest("The body ends in the middle of the JSON.")
		case strings.Contains(cause, "after top-level value"):
			return invalidRequest("The body must hold exactly one JSON object; there is more after it.")
		}
		return invalidRequest(fmt.Sprintf("The body is not valid JSON (at byte %d).", syn.ByteOffset))
	case errors.As(err, &sem):
		field := strings.TrimPrefix(string(sem.JSONPointer), "/")
		switch {
		case sem.Err != nil && strings.Contains(sem.Err.Error(), "unknown object member name"):
			return invalidRequest("Unknown field " + field + " (field names are case-sensitive).")
		case sem.GoType != nil && field != "":
			return invalidRequest(fmt.Sprintf("Field %s must be a %s, not a JSON %s.", field, jsonKind(sem.GoType), sem.JSONKind))
		}
	}
	return invalidRequest("The body is not valid JSON.")
}

// isMemberOf tells whether name is one of the JSON members of the struct
// dst points to: a field of the request, which a field problem may name.
func isMemberOf(dst any, name string) bool {
	t := reflect.TypeOf(dst)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if name == "" || t == nil || t.Kind() != reflect.Struct {
		return false
	}
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag == name {
			return true
		}
	}
	return false
}

// kindName names a JSON value's kind in words.
func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '[':
		return "an array"
	}
	return "that"
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	}
	return t.Kind().String()
}

// toValidationError turns the domain's problems, reported through the
// validator, back into its field problems.
func toValidationError(ves validator.ValidationErrors) error {
	out := &connection.ValidationError{}
	for _, fe := range ves {
		out.Fields = append(out.Fields, connection.FieldError{Field: fe.Field(), Code: fe.Tag(), Message: fe.Param()})
	}
	return out
}
