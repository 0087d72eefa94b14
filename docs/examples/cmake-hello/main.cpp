#include <string>
extern "C" void greet(const char *who);
int main() { std::string who = "world"; greet(who.c_str()); return 0; }
