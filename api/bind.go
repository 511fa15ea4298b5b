package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// newValidator reports fields by their JSON names.
func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	return v
}

// bindJSON decodes a JSON body strictly into dst and validates its tags:
// the body must be application/json, at most MaxBodyBytes, one object with
// only known fields of the right types and nothing after it.
func (s *Server) bindJSON(c echo.Context, dst any) error {
	req := c.Request()
	mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return &requestError{http.StatusUnsupportedMediaType, "unsupported_media_type", "Send the body as application/json."}
	}
	if req.ContentLength > MaxBodyBytes {
		return tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge()
		}
		return invalidRequest("The request body could not be read.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return invalidRequest(describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidRequest("The body must hold exactly one JSON object; there is more after it.")
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

func tooLarge() error {
	return &requestError{http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("The request body is larger than %d KiB.", MaxBodyBytes>>10)}
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("The body is not valid JSON (at byte %d).", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("Field %s must be a %s, not a JSON %s.", typ.Field, jsonKind(typ.Type), typ.Value)
		}
		return fmt.Sprintf("The body must be a JSON object, not a JSON %s.", typ.Value)
	case errors.Is(err, io.EOF):
		return "The body is empty; send a JSON object."
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "The body ends in the middle of the JSON."
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "Unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ") + "."
	}
	return "The body is not valid JSON."
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

// toValidationError turns validator tag failures into the domain's field
// problems, so there is one shape of 422 whichever tier found the fault.
func toValidationError(ves validator.ValidationErrors) error {
	out := &connection.ValidationError{}
	for _, fe := range ves {
		f := connection.FieldError{Field: fe.Field()}
		switch fe.Tag() {
		case "required":
			f.Code, f.Message = connection.FieldRequired, fe.Field()+" is required"
		case "max":
			f.Code, f.Message = connection.FieldTooLong, fmt.Sprintf("%s must be at most %s characters", fe.Field(), fe.Param())
		case "min":
			f.Code, f.Message = connection.FieldRequired, fmt.Sprintf("%s must not be empty; leave it out or give at least %s character", fe.Field(), fe.Param())
		default:
			f.Code, f.Message = connection.FieldInvalidFormat, fmt.Sprintf("%s is not valid (%s)", fe.Field(), fe.Tag())
		}
		out.Fields = append(out.Fields, f)
	}
	return out
}
