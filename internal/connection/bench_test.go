package connection

import "testing"

func BenchmarkParseServerURL(b *testing.B) {
	inputs := []string{"mattermost.example.com", "https://Chat.Example.COM:8443/mm/api/v4/users/me/", "bücher.example", "[2001:db8::1]:8065"}
	for i := 0; b.Loop(); i++ {
		if _, fe := ParseServerURL(inputs[i%len(inputs)], false); fe != nil {
			b.Fatal(fe)
		}
	}
}

func BenchmarkParseToken(b *testing.B) {
	for b.Loop() {
		if _, fe := ParseToken("  abcdefghijkmnopqrstuvwxyza\n"); fe != nil {
			b.Fatal(fe)
		}
	}
}
