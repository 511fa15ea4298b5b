package api

import (
	"net/url"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// pageParams are the paging parameters every listing takes.
type pageParams struct {
	Limit  int
	Cursor string
}

// listParams reads a listing's query string, refusing unknown, repeated
// or empty parameters rather than silently ignoring a typo. limit and
// cursor are read here; every other name goes to filter, which returns
// false for a name it does not know (or an error for a bad value). names
// lists the filters for the message about an unknown one.
func listParams(c echo.Context, names string, filter func(name, value string) (bool, error)) (pageParams, error) {
	var p pageParams
	params, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return p, invalidRequest("The query string is malformed (a broken %-escape or ';').")
	}
	for name, values := range params {
		if len(values) != 1 {
			return p, invalidRequest("Query parameter " + name + " must be given once.")
		}
		v := values[0]
		if v == "" {
			return p, invalidRequest("Query parameter " + name + " must not be empty; leave it out instead.")
		}
		switch name {
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > connection.MaxListLimit {
				return p, invalidRequest("limit must be a whole number from 1 to " + strconv.Itoa(connection.MaxListLimit) + ".")
			}
			p.Limit = n
		case "cursor":
			p.Cursor = v
		default:
			known, err := filter(name, v)
			if err != nil {
				return p, err
			}
			if !known {
				return p, invalidRequest("Unknown query parameter " + name + "; use " + names + ", limit or cursor.")
			}
		}
	}
	return p, nil
}
