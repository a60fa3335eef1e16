package daemon

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestPolkitRuleUnits: the polkit rule shipped lets the coffer user
// restart, try-restart and reload only the units coffer can bind (the
// pattern of ValidUnit), never any unit: "restart" on a stopped
// poweroff.target or reboot.target would start it.
func TestPolkitRuleUnits(t *testing.T) {
	b, err := os.ReadFile("../packaging/polkit/coffer.rules")
	if err != nil {
		t.Fatal(err)
	}
	rule := string(b)
	m := regexp.MustCompile(`(?m)^\s*/(\^.*\$)/\.test\(unit\)`).FindStringSubmatch(rule)
	if m == nil || !strings.Contains(rule, `action.lookup("unit")`) {
		t.Fatal("the polkit rule does not test the unit's name")
	}
	if m[1] != unitRE().String() {
		t.Fatalf("the polkit rule's unit pattern %s is not ValidUnit's %s", m[1], unitRE().String())
	}
	re := regexp.MustCompile(m[1])
	for _, u := range []string{"poweroff.target", "reboot.target", "emergency.target", "sshd.service.d", "-.slice"} {
		if re.MatchString(u) {
			t.Errorf("the polkit rule lets coffer restart %s", u)
		}
	}
	for _, u := range []string{"app.service", "db-backup@x.service", "consumer-rotate.service"} {
		if !re.MatchString(u) {
			t.Errorf("the polkit rule refuses %s", u)
		}
	}
}
